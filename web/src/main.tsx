// The shell: hash routes (served as one file under /app, no server fallback needed), the wallet bar
// (connect, network, sign in/out, balance, allowance, claimable credit) and the pages.
import { Component, type ReactNode, StrictMode, createContext, useCallback, useContext, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import type { Address } from "viem";
import {
  type Config, AppError, connect, grid, inWords, loadConfig, read, send, short, signIn, signOut, signedIn,
  switchChain, walletChainId, wrongNetwork,
} from "./lib";
import { PostPage } from "./pages/post";
import { TaskPage } from "./pages/task";
import { MyTasksPage } from "./pages/mytasks";
import { ExplorerPage } from "./pages/explorer";
import { ProviderPage } from "./pages/provider";
import { DaoPage } from "./pages/dao";

export type Session = {
  config: Config;
  account: Address | null;
  chainId: number | null;
  signedIn: boolean;
  refresh: () => void;
  tick: number;
};

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("no session");
  return session;
}

/** A status line read by screen readers: errors assertively, progress politely. */
export function Notice({ error, status }: { error?: string | null; status?: string | null }) {
  return (
    <>
      <div role="alert" className={error ? "notice error" : "sr-only"}>{error ?? ""}</div>
      <div role="status" className={status ? "notice" : "sr-only"}>{status ?? ""}</div>
    </>
  );
}

/** A page that throws shows what broke instead of a blank screen; the next route starts afresh. */
class PageBoundary extends Component<{ children: ReactNode; route: string }, { error: string | null; route: string }> {
  state = { error: null as string | null, route: this.props.route };
  static getDerivedStateFromError(error: unknown) {
    return { error: String(error) };
  }
  static getDerivedStateFromProps(props: { route: string }, state: { error: string | null; route: string }) {
    return props.route !== state.route ? { error: null, route: props.route } : null;
  }
  render() {
    if (this.state.error) return <><h1>Something broke</h1><p role="alert" className="notice error">This page failed: {this.state.error}</p></>;
    return this.props.children;
  }
}

function useRoute(): string {
  const [hash, setHash] = useState(window.location.hash || "#/");
  useEffect(() => {
    const on = () => setHash(window.location.hash || "#/");
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return hash.slice(1);
}

const PAGES: [string, string][] = [
  ["/", "Connect"],
  ["/post", "Post a task"],
  ["/tasks", "My tasks"],
  ["/explorer", "Explorer"],
  ["/provider", "Provider"],
  ["/dao", "DAO"],
];

function WalletPanel() {
  const session = useSession();
  const { config, account, chainId } = session;
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  const [money, setMoney] = useState<{ balance: bigint; allowance: bigint; claimable: bigint } | null>(null);

  useEffect(() => {
    if (!account || chainId !== config.chain_id) return;
    Promise.all([
      read<bigint>(config, account, "GridToken", "balanceOf", [account]),
      read<bigint>(config, account, "GridToken", "allowance", [account, config.addresses.TaskEscrow]),
      read<bigint>(config, account, "TaskEscrow", "claimable", [account]),
    ]).then(([balance, allowance, claimable]) => setMoney({ balance, allowance, claimable }))
      .catch((e) => setError(inWords(e, "reading your balance")));
  }, [account, chainId, session.tick]);

  const act = (doing: string, action: () => Promise<void>) => async () => {
    setError(null);
    setStatus(`${doing}…`);
    try {
      await action();
      setStatus(`${doing}: done`);
    } catch (e) {
      setStatus(null);
      setError(inWords(e, doing));
    }
    session.refresh();
  };

  return (
    <section aria-labelledby="wallet-title" className="card">
      <h2 id="wallet-title">Wallet</h2>
      {!account && <button onClick={act("connecting", async () => { await connect(); })}>Connect wallet</button>}
      {account && (
        <dl className="facts">
          <dt>Account</dt><dd data-testid="account">{account}</dd>
          <dt>Network</dt>
          <dd>{chainId === config.chain_id ? `chain ${chainId} (the marketplace's)` : wrongNetwork(chainId ?? 0, config.chain_id)}</dd>
          {money && <>
            <dt>Balance</dt><dd data-testid="balance">{grid(money.balance)}</dd>
            <dt>Escrow allowance</dt><dd data-testid="allowance">{grid(money.allowance)}</dd>
            <dt>Claimable credit</dt><dd data-testid="claimable">{grid(money.claimable)}</dd>
          </>}
        </dl>
      )}
      <div className="row">
        {account && chainId !== config.chain_id && (
          <button onClick={act("switching network", () => switchChain(config.chain_id))}>Switch to chain {config.chain_id}</button>
        )}
        {account && chainId === config.chain_id && !session.signedIn && (
          <button onClick={act("signing in", () => signIn(config, account))}>Sign in with Ethereum</button>
        )}
        {account && session.signedIn && <button onClick={act("signing out", signOut)}>Sign out</button>}
        {account && money && money.claimable > 0n && (
          <button onClick={act("claiming your credit", async () => {
            await send(config, account, "TaskEscrow", "claim", [], "claiming your credit");
          })}>Claim {grid(money.claimable)}</button>
        )}
      </div>
      {money && money.balance === 0n && <p className="notice">Your balance is zero: you need GRID to post a task.</p>}
      <Notice error={error} status={status} />
    </section>
  );
}

function ConnectPage() {
  return (
    <>
      <h1>Hashgrid</h1>
      <p>Post compute tasks that several staked providers run and verify; follow them live; see what the
        network did; govern it.</p>
      <WalletPanel />
    </>
  );
}

function App({ config }: { config: Config }) {
  const route = useRoute();
  const [account, setAccount] = useState<Address | null>(null);
  const [chainId, setChainId] = useState<number | null>(null);
  const [tick, setTick] = useState(0);
  const [isSignedIn, setSignedIn] = useState(signedIn());
  const refresh = useCallback(() => {
    setTick((t) => t + 1);
    setSignedIn(signedIn());
  }, []);

  useEffect(() => {  // what the wallet shares, re-read on every refresh
    const eth = window.ethereum;
    if (!eth) return;
    eth.request({ method: "eth_accounts" })
      .then(async (accounts) => {
        setAccount(((accounts as Address[])[0] ?? null));
        setChainId(await walletChainId());
      })
      .catch(() => setAccount(null));
  }, [tick]);

  useEffect(() => {  // the wallet's events
    const eth = window.ethereum;
    if (!eth) return;
    const onAccounts = () => { void signOut().finally(refresh); };
    eth.on("accountsChanged", onAccounts);
    eth.on("chainChanged", refresh);
    return () => {
      eth.removeListener("accountsChanged", onAccounts);
      eth.removeListener("chainChanged", refresh);
    };
  }, [refresh]);

  useEffect(() => {
    const title = PAGES.find(([path]) => path === route)?.[1];
    document.title = `${title ?? "Task"} · Hashgrid`;
  }, [route]);

  let page;
  if (route.startsWith("/task/")) page = <TaskPage taskId={Number(route.slice(6))} />;
  else if (route === "/post") page = <PostPage />;
  else if (route === "/tasks") page = <MyTasksPage />;
  else if (route.startsWith("/explorer")) page = <ExplorerPage route={route} />;
  else if (route === "/provider") page = <ProviderPage />;
  else if (route === "/dao") page = <DaoPage />;
  else page = <ConnectPage />;

  const session: Session = { config, account, chainId, signedIn: isSignedIn, refresh, tick };
  return (
    <SessionContext.Provider value={session}>
      <a className="skip" href="#main">Skip to content</a>
      <header>
        <nav aria-label="Pages">
          <ul>
            {PAGES.map(([path, title]) => (
              <li key={path}>
                <a href={`#${path}`} aria-current={route === path ? "page" : undefined}>{title}</a>
              </li>
            ))}
          </ul>
        </nav>
        <p className="who" aria-label="Connected account">
          {account ? `${short(account)}${isSignedIn ? " · signed in" : ""}` : "not connected"}
        </p>
      </header>
      <main id="main" tabIndex={-1}><PageBoundary route={route}>{page}</PageBoundary></main>
    </SessionContext.Provider>
  );
}

async function start(): Promise<void> {
  const root = createRoot(document.getElementById("root")!);
  try {
    const config = await loadConfig();
    root.render(<StrictMode><App config={config} /></StrictMode>);
  } catch (e) {
    root.render(<main><h1>Hashgrid</h1><p role="alert">{e instanceof AppError ? e.message : String(e)}</p></main>);
  }
}

void start();
