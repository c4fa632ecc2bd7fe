// The app's one seam to the outside: the marketplace API (same origin, bearer token from SIWE) and the
// chain through the user's EIP-1193 wallet (viem). Errors become sentences here, never selectors.
import {
  type Abi,
  type Address,
  type EIP1193Provider,
  type Hex,
  BaseError,
  ContractFunctionRevertedError,
  UserRejectedRequestError,
  createPublicClient,
  createWalletClient,
  custom,
  formatUnits,
  parseEventLogs,
  parseSignature,
} from "viem";
import { createSiweMessage } from "viem/siwe";

export type Config = {
  chain_id: number;
  start_block: number;
  addresses: Record<string, Address>;
  abis: Record<string, Abi>;
  params: Record<string, unknown>;
};

declare global {
  interface Window {
    ethereum?: EIP1193Provider;
  }
}

export class AppError extends Error {}

export async function loadConfig(): Promise<Config> {
  const response = await fetch("/app/config.json");
  if (!response.ok) throw new AppError(`the marketplace has no chain configuration (${response.status})`);
  return (await response.json()) as Config;
}

export function grid(wei: bigint | string | number | null | undefined, digits = 4): string {
  if (wei === null || wei === undefined || wei === "") return "-";
  const text = formatUnits(BigInt(wei), 18);
  const [whole, frac = ""] = text.split(".");
  const cut = frac.slice(0, digits).replace(/0+$/, "");
  return `${whole}${cut ? "." + cut : ""} GRID`;
}

export function short(address: string | null | undefined): string {
  if (!address) return "-";
  return `${address.slice(0, 6)}…${address.slice(-4)}`;
}

// ------------------------------------------------------------------------------------------- the API
let token: string | null = sessionStorage.getItem("hashgrid.token");

export function signedIn(): boolean {
  return token !== null;
}

function apiMessage(status: number, body: unknown): string {
  const b = body as { code?: string; message?: string } | null;
  if (b && b.message) {
    if (b.code === "rate_limited") return `too many requests: ${b.message}`;
    return b.message;
  }
  return `the marketplace answered ${status}`;
}

export async function api<T>(method: string, path: string, body?: unknown, raw?: BodyInit): Promise<T> {
  const headers: Record<string, string> = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload: BodyInit | undefined = raw;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  const text = await response.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (response.status === 401 && token) {
    token = null;
    sessionStorage.removeItem("hashgrid.token");
    throw new AppError("your sign-in has expired or was revoked: sign in again");
  }
  if (!response.ok) throw new AppError(apiMessage(response.status, parsed));
  return parsed as T;
}

/** Whether this wallet already holds the blob (signed HEAD): an upload of bytes the server already has from
 * this wallet is answered before the body is read and the connection closed, which a browser reports as a
 * failed fetch, so the app asks first. */
export async function haveBlob(sha256: string): Promise<boolean> {
  const response = await fetch(`/blobs/${sha256}`, { method: "HEAD", headers: token ? { Authorization: `Bearer ${token}` } : {} });
  return response.ok;
}

export async function download(path: string): Promise<Uint8Array> {
  const response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (!response.ok) throw new AppError(`download failed: ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** Follows GET /tasks/{id}/logs?follow=true (SSE over fetch: EventSource cannot send a bearer token),
 * reconnecting after `after` until the stream says `end` (a task the indexer has not seen yet is a 404). */
export async function followLogs(taskId: number, onEvent: (kind: string, data: string) => void,
                                 signal: AbortSignal): Promise<void> {
  let after = 0;
  const pause = () => new Promise((resolve) => setTimeout(resolve, 1000));
  while (!signal.aborted) {
    const response = await fetch(`/tasks/${taskId}/logs?follow=true&after=${after}`, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      signal,
    });
    if (response.status === 404) {
      await pause();
      continue;
    }
    if (response.status === 403) throw new AppError("only the task's customer (and each provider, its own replica's) can read its logs");
    if (!response.ok || !response.body) throw new AppError(`logs: ${apiMessage(response.status, await response.json().catch(() => null))}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut: number;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let kind = "message";
        const data: string[] = [];
        for (const line of frame.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("id:")) after = Number(line.slice(3).trim()) || after;
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (kind === "end") return;
        if (data.length) onEvent(kind, data.join("\n"));
      }
    }
    await pause();
  }
}

// ------------------------------------------------------------------------------------------ the wallet
export function wallet(): EIP1193Provider {
  if (!window.ethereum) throw new AppError("no wallet found: install or enable an Ethereum wallet (EIP-1193)");
  return window.ethereum;
}

export function clients(config: Config, account: Address) {
  const transport = custom(wallet());
  const chain = {
    id: config.chain_id,
    name: config.chain_id === 31337 ? "Hashgrid dev chain" : `chain ${config.chain_id}`,
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [] as string[] } },
  };
  return {
    public: createPublicClient({ chain, transport }),
    wallet: createWalletClient({ chain, transport, account }),
  };
}

export async function walletChainId(): Promise<number> {
  const hex = (await wallet().request({ method: "eth_chainId" })) as Hex;
  return Number(BigInt(hex));
}

export async function switchChain(chainId: number): Promise<void> {
  try {
    await wallet().request({ method: "wallet_switchEthereumChain", params: [{ chainId: `0x${chainId.toString(16)}` }] });
  } catch (error) {
    throw new AppError(inWords(error, "switching network"));
  }
}

export async function connect(): Promise<Address> {
  try {
    const accounts = (await wallet().request({ method: "eth_requestAccounts" })) as Address[];
    if (!accounts.length) throw new AppError("the wallet shared no account");
    return accounts[0];
  } catch (error) {
    throw new AppError(inWords(error, "connecting"));
  }
}

export async function signIn(config: Config, address: Address): Promise<void> {
  const chainId = await walletChainId();
  if (chainId !== config.chain_id) throw new AppError(wrongNetwork(chainId, config.chain_id));
  const { nonce } = await api<{ nonce: string }>("GET", "/auth/nonce");
  const message = createSiweMessage({
    domain: window.location.host,
    address,
    statement: "Sign in to the Hashgrid marketplace.",
    uri: window.location.origin,
    version: "1",
    chainId,
    nonce,
    issuedAt: new Date(),
    expirationTime: new Date(Date.now() + 3600_000),
  });
  let signature: Hex;
  try {
    signature = (await wallet().request({ method: "personal_sign", params: [message as Hex, address] })) as Hex;
  } catch (error) {
    throw new AppError(inWords(error, "signing in"));
  }
  const out = await api<{ token: string }>("POST", "/auth/siwe", { message, signature });
  token = out.token;
  sessionStorage.setItem("hashgrid.token", token);
}

export async function signOut(): Promise<void> {
  if (token) {
    try {
      await api("POST", "/auth/signout");
    } finally {
      token = null;
      sessionStorage.removeItem("hashgrid.token");
    }
  }
}

export function wrongNetwork(have: number, want: number): string {
  return `your wallet is on chain ${have}, but the marketplace runs on chain ${want}: switch network`;
}

/** A wallet, RPC or revert error as one sentence a person can act on. */
export function inWords(error: unknown, doing: string): string {
  if (error instanceof AppError) return error.message;
  const code = (error as { code?: number })?.code;
  if (code === 4001 || (error instanceof BaseError && error.walk((e) => e instanceof UserRejectedRequestError))) {
    return `you rejected the request in your wallet (${doing}); nothing was sent`;
  }
  if (code === 4902) return "your wallet does not know the marketplace's network: add it in the wallet first";
  if (error instanceof BaseError) {
    const revert = error.walk((e) => e instanceof ContractFunctionRevertedError);
    if (revert instanceof ContractFunctionRevertedError) {
      const name = revert.data?.errorName;
      const args = (revert.data?.args ?? []).map((a) => (typeof a === "bigint" ? a.toString() : String(a)));
      if (name === "ERC20InsufficientBalance") return `too little GRID: the balance is ${grid(args[1])}, ${doing} needs ${grid(args[2])}`;
      if (name === "ERC20InsufficientAllowance") return `the escrow may spend only ${grid(args[1])} of your GRID, ${doing} needs ${grid(args[2])}: approve more`;
      if (name) return `the transaction was reverted (${doing}): ${humanize(name)}(${args.join(", ")})`;
      return `the transaction was reverted (${doing}): ${revert.reason ?? revert.shortMessage}`;
    }
    return `${doing} failed: ${error.shortMessage}`;
  }
  return `${doing} failed: ${(error as Error)?.message ?? String(error)}`;
}

function humanize(name: string): string {
  return name.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
}

export async function send(config: Config, account: Address, contract: string, functionName: string,
                           args: unknown[], doing: string) {
  const c = clients(config, account);
  const have = await walletChainId();
  if (have !== config.chain_id) throw new AppError(wrongNetwork(have, config.chain_id));
  try {
    const { request } = await c.public.simulateContract({
      address: config.addresses[contract], abi: config.abis[contract], functionName, args, account,
    });
    const hash = await c.wallet.writeContract(request);
    const receipt = await c.public.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new AppError(`the transaction was reverted (${doing})`);
    return receipt;
  } catch (error) {
    throw new AppError(inWords(error, doing));
  }
}

export async function read<T>(config: Config, account: Address, contract: string, functionName: string,
                              args: unknown[] = []): Promise<T> {
  const c = clients(config, account);
  return (await c.public.readContract({
    address: config.addresses[contract], abi: config.abis[contract], functionName, args,
  })) as T;
}

/** An EIP-2612 permit for `spender` to take `value` GRID until `deadline`, signed in the wallet. */
export async function signPermit(config: Config, owner: Address, spender: Address, value: bigint, deadline: bigint) {
  const have = await walletChainId();
  if (have !== config.chain_id) throw new AppError(wrongNetwork(have, config.chain_id));
  const token = config.addresses.GridToken;
  const [, name, version] = await read<readonly [Hex, string, string]>(config, owner, "GridToken", "eip712Domain");
  const nonce = await read<bigint>(config, owner, "GridToken", "nonces", [owner]);
  let signature: Hex;
  try {
    signature = await clients(config, owner).wallet.signTypedData({
      account: owner,
      domain: { name, version, chainId: config.chain_id, verifyingContract: token },
      types: { Permit: [{ name: "owner", type: "address" }, { name: "spender", type: "address" },
                        { name: "value", type: "uint256" }, { name: "nonce", type: "uint256" },
                        { name: "deadline", type: "uint256" }] },
      primaryType: "Permit",
      message: { owner, spender, value, nonce, deadline },
    });
  } catch (error) {
    throw new AppError(inWords(error, "signing the permit"));
  }
  const { r, s, v, yParity } = parseSignature(signature);
  return { r, s, v: Number(v ?? BigInt(yParity + 27)) };
}

export function postedTaskId(config: Config, logs: Parameters<typeof parseEventLogs>[0]["logs"]): bigint {
  const events = parseEventLogs({ abi: config.abis.TaskEscrow, logs, eventName: "TaskPosted" });
  const args = events[0]?.args as { taskId?: bigint } | undefined;
  if (args?.taskId === undefined) throw new AppError("the transaction posted no task");
  return args.taskId;
}
