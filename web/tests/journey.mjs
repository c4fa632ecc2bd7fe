// The web app driven in Debian's headless Chromium (playwright-core) against a live marketplace, anvil and
// provider daemons (started by tests/e2e/test_webapp.py). The page gets an injected EIP-1193 wallet: it
// signs messages with anvil's dev keys (DEV-ONLY keys, this local chain only) and forwards every other call
// (transactions included, which anvil signs for its own dev accounts) to anvil.
//
// Env: HG_URL (marketplace), HG_RPC (anvil), HG_KEYS (JSON: customer, poor, dao private keys), HG_OUT (folder
// for screenshots and the result JSON). Prints one JSON line of what it saw; exits non-zero on a failed check.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { isHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { stringify as stringifyYaml } from "yaml";

const require = createRequire(import.meta.url);
const URL_ = process.env.HG_URL;
const RPC = process.env.HG_RPC;
const KEYS = JSON.parse(process.env.HG_KEYS);
const OUT = process.env.HG_OUT;
const TASK_TIMEOUT = Number(process.env.HG_TASK_TIMEOUT || 240) * 1000;
mkdirSync(OUT, { recursive: true });
rmSync(join(OUT, "failure.png"), { force: true });
const seen = { steps: [], axe: {}, errors: {} };
const current = { page: null };  // for a screenshot of the page as it was when a check failed

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function rpc(method, params = []) {
  const response = await fetch(RPC, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
  });
  return await response.json();
}

// ---------------------------------------------------------------------------- the injected wallet
const wallet = { account: privateKeyToAccount(KEYS.customer), chainId: 1, connected: false, rejectNext: false };

function useKey(key) {
  wallet.account = privateKeyToAccount(key);
  return [["accountsChanged", [wallet.account.address]]];
}

async function handle({ method, params = [] }) {
  const hexChain = `0x${wallet.chainId.toString(16)}`;
  if (wallet.rejectNext && (method === "personal_sign" || method === "eth_sendTransaction")) {
    wallet.rejectNext = false;
    return { error: { code: 4001, message: "User rejected the request." } };
  }
  switch (method) {
    case "eth_requestAccounts":
      wallet.connected = true;
      return { result: [wallet.account.address], emit: [["connect", { chainId: hexChain }], ["accountsChanged", [wallet.account.address]]] };
    case "eth_accounts":
      return { result: wallet.connected ? [wallet.account.address] : [] };
    case "eth_chainId":
      return { result: hexChain };
    case "net_version":
      return { result: String(wallet.chainId) };
    case "wallet_switchEthereumChain": {
      const want = Number(BigInt(params[0].chainId));
      if (want !== 31337) return { error: { code: 4902, message: "Unrecognized chain." } };
      wallet.chainId = want;
      return { result: null, emit: [["chainChanged", params[0].chainId]] };
    }
    case "eth_signTypedData_v4": {
      const [address, json] = params;
      check(address.toLowerCase() === wallet.account.address.toLowerCase(), "typed data for the connected account");
      const { domain, types, primaryType, message } = JSON.parse(json);
      delete types.EIP712Domain;
      seen.typed_data = primaryType;
      return { result: await wallet.account.signTypedData({ domain, types, primaryType, message }) };
    }
    case "personal_sign": {
      const [message, address] = params;
      check(address.toLowerCase() === wallet.account.address.toLowerCase(), "personal_sign for the connected account");
      return { result: await wallet.account.signMessage({ message: isHex(message) ? { raw: message } : message }) };
    }
    default: {
      const answer = await rpc(method, params);
      return answer.error ? { error: answer.error } : { result: answer.result };
    }
  }
}

const INJECTED = `(() => {
  const listeners = {};
  const provider = {
    isHashgridTestWallet: true,
    on(event, fn) { (listeners[event] ||= []).push(fn); return provider; },
    removeListener(event, fn) { listeners[event] = (listeners[event] || []).filter((f) => f !== fn); return provider; },
    async request(args) {
      const answer = await window.__hashgridWallet(args);
      for (const [event, value] of answer.emit || []) for (const fn of listeners[event] || []) fn(value);
      if (answer.error) { const e = new Error(answer.error.message); e.code = answer.error.code; e.data = answer.error.data; throw e; }
      return answer.result;
    },
  };
  window.__hashgridEmit = (event, value) => { for (const fn of listeners[event] || []) fn(value); };
  window.ethereum = provider;
})();`;

// ---------------------------------------------------------------------------- helpers
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

async function axe(page, name) {
  await page.evaluate(AXE);  // through the debugger, not a <script>: the page's CSP stays as served
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  seen.axe[name] = result.violations.map((v) => `${v.impact}: ${v.id} (${v.nodes.length})`);
  check(bad.length === 0, `no serious accessibility violation on ${name}: ${JSON.stringify(bad.map((v) => [v.id, v.nodes.map((n) => n.target)]))}`);
}

async function shoot(page, name) {
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
  await axe(page, name);
  seen.steps.push(name);
}

async function alertText(page, text, timeout = 30_000) {
  const alert = page.locator('[role="alert"]', { hasText: text });
  await alert.first().waitFor({ timeout });
  return (await alert.first().textContent()).trim();
}

async function go(page, hash, heading) {
  await page.goto(`${URL_}/app/#${hash}`);
  await page.getByRole("heading", { level: 1, name: heading }).waitFor();
}

async function signInAs(page, key) {
  const emit = useKey(key);
  await page.evaluate((events) => { for (const [e, v] of events) window.__hashgridEmit(e, v); }, emit);
  await go(page, "/", "Hashgrid");
  await page.getByRole("button", { name: "Sign in with Ethereum" }).click();
  await page.getByText("signing in: done").waitFor();
}

async function mine(blocks) {
  await rpc("anvil_mine", [`0x${blocks.toString(16)}`]);
}

// ---------------------------------------------------------------------------- the journey
async function main() {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run"],
  });
  const cspErrors = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, acceptDownloads: true });
    await context.exposeFunction("__hashgridWallet", handle);
    await context.addInitScript(INJECTED);
    const page = await context.newPage();
    current.page = page;
    page.on("console", (m) => { if (m.type() === "error" && /Content Security Policy|Refused to/.test(m.text())) cspErrors.push(m.text()); });
    page.setDefaultTimeout(30_000);

    // Connect: a wallet on the wrong network, switched; a rejected signature; then a sign-in
    await go(page, "/", "Hashgrid");
    for (let i = 0; i < 20; i++) {  // by keyboard: Tab to the button, Enter
      await page.keyboard.press("Tab");
      if ((await page.evaluate(() => document.activeElement?.textContent)) === "Connect wallet") break;
    }
    check((await page.evaluate(() => document.activeElement?.textContent)) === "Connect wallet", "Connect wallet is reachable by Tab");
    await page.keyboard.press("Enter");
    await page.getByTestId("account").waitFor();
    check((await page.getByTestId("account").textContent()) === wallet.account.address, "the connected account is shown");
    await page.getByText("your wallet is on chain 1, but the marketplace runs on chain 31337").waitFor();
    seen.errors.wrong_network = "your wallet is on chain 1, but the marketplace runs on chain 31337: switch network";
    await page.getByRole("button", { name: "Switch to chain 31337" }).click();
    await page.getByText("chain 31337 (the marketplace's)").waitFor();
    await page.getByTestId("balance").waitFor();
    wallet.rejectNext = true;
    await page.getByRole("button", { name: "Sign in with Ethereum" }).click();
    seen.errors.rejected_signature = await alertText(page, "you rejected the request in your wallet");
    await page.getByRole("button", { name: "Sign in with Ethereum" }).click();
    await page.getByText("signing in: done").waitFor();
    await page.getByRole("button", { name: "Sign out" }).waitFor();
    await shoot(page, "connect");

    // Upload a spec and its files: the page's sha256 of each file is Node's
    await go(page, "/post", "Post a task");
    const sha = (bytes) => createHash("sha256").update(bytes).digest("hex");
    const data = readFileSync(new URL("../../examples/wasm/data.txt", import.meta.url));
    const module = readFileSync(new URL("../../examples/wasm/wordfreq.wasm", import.meta.url));
    const uploaded = { version: 1, name: "uploaded wordfreq", runtime: "wasm", module: sha(module),
                       command: ["wordfreq.wasm", "/in/data.txt"], outputs: ["result.txt"],
                       inputs: [{ path: "data.txt", sha256: sha(data), size: data.length }],
                       resources: { cpus: 1, memory_mb: 64, disk_mb: 4, timeout_s: 30 },
                       replicas: 3, quorum: 2, max_price_per_replica: "10000000000000000", deadline_s: 3600 };
    await page.getByLabel("or upload a spec").setInputFiles(  // YAML, as `hashgrid task init` writes it
      { name: "spec.yaml", mimeType: "application/yaml", buffer: Buffer.from(stringifyYaml(uploaded)) });
    await page.getByLabel("Input files and module").setInputFiles([
      { name: "data.txt", mimeType: "text/plain", buffer: data },
      { name: "wordfreq.wasm", mimeType: "application/wasm", buffer: module }]);
    for (const digest of [sha(data), sha(module)]) await page.getByRole("cell", { name: digest }).waitFor();
    check(JSON.parse(await page.getByLabel("Spec (JSON)", { exact: true }).inputValue()).name === "uploaded wordfreq", "the uploaded spec is shown");
    await page.getByRole("button", { name: "Check price and providers" }).click();
    await page.getByTestId("providers-can-run").filter({ hasText: "3 of 3" }).waitFor();
    seen.steps.push("uploaded-spec-hashed");

    // Post a task from the template: price range and providers, approve + post, follow it to settlement
    await page.getByLabel("Start from a template").selectOption("wasm");
    await page.getByText("template wasm word frequencies loaded").waitFor();
    await page.getByRole("button", { name: "Check price and providers" }).click();
    const canRun = await page.getByTestId("providers-can-run").textContent();
    check(canRun.startsWith("3 of 3"), `three providers can run the wasm task (${canRun})`);
    seen.providers_can_run = canRun;
    await shoot(page, "post");
    await page.getByRole("button", { name: "Post task" }).click();
    seen.errors.allowance = await alertText(page, "the escrow may spend only");
    await page.getByRole("button", { name: /^Approve / }).click();
    await page.getByText("now post the task").waitFor();
    await page.getByRole("button", { name: "Post task" }).click();
    await page.waitForURL(/#\/task\/\d+$/, { timeout: 60_000 });
    const taskId = Number(page.url().split("/").pop());
    seen.task_id = taskId;
    await page.getByTestId("task-status").filter({ hasText: "settled" }).waitFor({ timeout: TASK_TIMEOUT });
    seen.states = (await page.getByTestId("task-states").textContent()).split(" → ");
    check(seen.states.length >= 2 && seen.states.at(-1) === "settled", `state changes followed live (${seen.states})`);
    const resultHash = (await page.getByTestId("result-hash").textContent()).trim();
    check(/^0x[0-9a-f]{64}$/.test(resultHash), `an accepted hash is shown (${resultHash})`);
    seen.result_hash = resultHash;
    await page.getByTestId("logs").filter({ hasNotText: "no logs yet" }).waitFor();
    seen.logs = (await page.getByTestId("logs").textContent()).slice(0, 400);
    const events = await page.getByTestId("events").textContent();
    for (const name of ["TaskPosted", "TaskAssigned", "ResultCommitted", "ResultRevealed", "TaskSettled"]) {
      check(events.includes(name), `the task page lists ${name} (${events})`);
    }
    const [download] = await Promise.all([page.waitForEvent("download"),
      page.getByRole("button", { name: "Download result.txt" }).click()]);
    const bytes = readFileSync(await download.path());
    const digest = createHash("sha256").update(bytes).digest("hex");
    const verified = (await page.getByTestId("verified-result.txt").textContent());
    check(verified.includes(digest), `the downloaded result's sha256 ${digest} is the verified one (${verified})`);
    seen.output = { sha256: digest, text: bytes.toString("utf8").slice(0, 200) };
    const [invoice] = await Promise.all([page.waitForEvent("download"),
      page.getByRole("button", { name: "Download invoice" }).click()]);
    const invoiceDoc = JSON.parse(readFileSync(await invoice.path(), "utf8"));
    check(invoiceDoc.state === "settled" && BigInt(invoiceDoc.escrowed) === BigInt(invoiceDoc.paid) + BigInt(invoiceDoc.fee) + BigInt(invoiceDoc.refund),
          `the invoice adds up (${JSON.stringify(invoiceDoc)})`);
    await page.getByTestId("invoice").waitFor();
    seen.invoice = invoiceDoc;
    await shoot(page, "task");

    // A task no provider can place (a GPU): the reason, then cancel it and claim the refund
    await go(page, "/post", "Post a task");
    await page.getByLabel("Start from a template").selectOption("wasm");
    await page.getByText("template wasm word frequencies loaded").waitFor();
    const spec = { version: 1, name: "needs a gpu", runtime: "docker", image: `sha256:${"ab".repeat(32)}`,
                   command: ["true"], resources: { cpus: 1, memory_mb: 64, disk_mb: 4, timeout_s: 30, gpus: 1 },
                   replicas: 1, quorum: 1, max_price_per_replica: "10000000000000000", deadline_s: 3600 };
    await page.getByLabel("Spec (JSON)", { exact: true }).fill(JSON.stringify(spec, null, 2));
    await page.getByRole("button", { name: "Post with a permit" }).click();  // one signature, one transaction
    await page.waitForURL(/#\/task\/\d+$/, { timeout: 60_000 });
    const gpuTask = Number(page.url().split("/").pop());
    check(gpuTask !== taskId, "a second task was posted");
    const unplaced = page.getByTestId("unplaced");
    await unplaced.waitFor({ timeout: 60_000 });
    seen.errors.unplaceable = (await unplaced.textContent()).trim();
    check(/gpu|docker/i.test(seen.errors.unplaceable), `the unplaced reason names what is missing (${seen.errors.unplaceable})`);
    await page.getByRole("button", { name: "Cancel task" }).click();
    await page.getByTestId("task-status").filter({ hasText: "cancelled" }).waitFor({ timeout: 60_000 });
    await page.getByTestId("task-claimable").waitFor();
    seen.refund = (await page.getByTestId("task-claimable").textContent()).trim();
    await page.getByRole("button", { name: "Claim refund" }).click();
    await page.getByText("claiming your refund: done").waitFor();
    await page.getByTestId("task-claimable").waitFor({ state: "detached" });

    // My tasks: both, filterable
    await go(page, "/tasks", "My tasks");
    await page.getByTestId("my-tasks").getByRole("link", { name: `#${gpuTask}` }).waitFor();
    await page.getByTestId("my-tasks").getByRole("link", { name: `#${taskId}` }).waitFor();
    await page.getByLabel("Status").selectOption("cancelled");
    check(await page.getByTestId("my-tasks").getByRole("link", { name: `#${taskId}` }).count() === 0, "the filter hides the settled task");
    await shoot(page, "my-tasks");
    await page.getByRole("button", { name: `Repost task ${gpuTask}` }).click();
    await page.getByRole("heading", { level: 1, name: "Post a task" }).waitFor();
    const reposted = JSON.parse(await page.getByLabel("Spec (JSON)", { exact: true }).inputValue());
    check(reposted.name === "needs a gpu" && reposted.resources.gpus === 1, "repost opens the task's spec");

    // Explorer: the settled task and three providers with stake and earnings
    await go(page, "/explorer", "Explorer");
    const row = page.getByTestId("explorer-tasks").getByRole("row").filter({ hasText: `#${taskId}` });
    await row.filter({ hasText: "settled" }).waitFor();
    await page.getByTestId("explorer-providers").getByRole("row").nth(3).waitFor();
    await page.getByTestId("stats").waitFor();
    const providerRows = () => page.getByTestId("explorer-providers").locator("tbody tr").count();
    check(await providerRows() === 4, "four registered providers listed");
    await page.getByLabel("has a GPU").check();
    check(await providerRows() === 0, "the GPU filter leaves none (no GPU here)");
    await page.getByLabel("has a GPU").uncheck();
    await page.getByLabel("online", { exact: true }).check();
    check(await providerRows() === 3, "the online filter leaves the three daemons");
    await page.getByLabel("online", { exact: true }).uncheck();
    await shoot(page, "explorer");

    // A reverted transaction in words: withdrawing with nothing unbonding (Provider page)
    await go(page, "/provider", "Provider");
    await page.getByRole("button", { name: "Withdraw unbonded" }).click();
    seen.errors.reverted = await alertText(page, "the transaction was reverted");
    check(!/0x[0-9a-f]{8}\b/.test(seen.errors.reverted) || seen.errors.reverted.includes("registry"), "a revert in words, not a selector");

    // A provider's own page: its stake and what its daemon registered
    await page.evaluate((events) => { for (const [e, v] of events) window.__hashgridEmit(e, v); }, useKey(KEYS.provider));
    await go(page, "/provider", "Provider");
    await page.getByTestId("stake").filter({ hasText: "1000 GRID" }).waitFor();
    await page.getByTestId("device").filter({ hasText: "wasm" }).waitFor();
    await shoot(page, "provider");

    // Too little balance: a wallet without GRID tries to post
    await signInAs(page, KEYS.poor);
    await go(page, "/post", "Post a task");
    await page.getByLabel("Start from a template").selectOption("wasm");
    await page.getByText("template wasm word frequencies loaded").waitFor();
    await page.getByRole("button", { name: "Post task" }).click();
    seen.errors.balance = await alertText(page, "too little GRID");

    // Another wallet on the customer's task: the chain's evidence, never its logs, replicas' reports or outputs
    await go(page, `/task/${taskId}`, `Task ${taskId}`);
    await page.getByTestId("task-status").filter({ hasText: "settled" }).waitFor();
    await page.getByTestId("logs-note").filter({ hasText: "only the task's customer" }).waitFor();
    check(await page.getByRole("button", { name: /^Download/ }).count() === 0, "a stranger gets no download");
    check((await page.getByTestId("events").textContent()).includes("TaskSettled"), "a stranger sees the chain's evidence");
    seen.steps.push("stranger-view");

    // DAO: the big holder delegates, proposes a fee change, votes, queues and executes it
    await signInAs(page, KEYS.dao);
    await go(page, "/dao", "DAO");
    await page.getByRole("button", { name: "Delegate to myself" }).click();
    await page.getByText("delegating to yourself: done").waitFor();
    await mine(1);  // votes count from the block after the delegation (the governor reads clock() - 1)
    await page.getByLabel("New value").fill("300");
    await page.getByLabel("Description").fill("Raise the protocol fee to 3%");
    await page.getByRole("button", { name: "Propose" }).click();
    await page.getByText("proposing: done").waitFor();
    await mine(2);  // past the voting delay
    await go(page, "/dao", "DAO");
    await page.getByTestId("proposal-state").filter({ hasText: "active" }).waitFor();
    await page.getByRole("button", { name: "Vote for" }).click();
    await page.getByText("voting for: done").waitFor();
    await shoot(page, "dao");
    await mine(60);  // past the voting period
    await go(page, "/dao", "DAO");
    await page.getByTestId("proposal-state").filter({ hasText: "succeeded" }).waitFor();
    await page.getByRole("button", { name: "Queue" }).click();
    await page.getByText("queueing the proposal: done").waitFor();
    await rpc("evm_increaseTime", [3601]);  // past the timelock delay
    await mine(1);
    await go(page, "/dao", "DAO");
    await page.getByTestId("proposal-state").filter({ hasText: "queued" }).waitFor();
    await page.getByRole("button", { name: "Execute" }).click();
    await page.getByText("executing the proposal: done").waitFor();
    await go(page, "/dao", "DAO");
    await page.getByTestId("proposal-state").filter({ hasText: "executed" }).waitFor();
    seen.steps.push("dao-executed");
    await page.getByLabel("a treasury payment").check();
    await page.getByLabel("Pay to").fill(privateKeyToAccount(KEYS.poor).address);
    await page.getByLabel("Amount (GRID)").fill("1");
    await page.getByLabel("Description").fill("Pay 1 GRID for the web app");
    await page.getByRole("button", { name: "Propose" }).click();
    await page.getByText("proposing: done").waitFor();
    await page.getByRole("heading", { name: "Pay 1 GRID for the web app" }).waitFor();
    seen.steps.push("dao-treasury-proposal");

    // A phone-sized screen: the explorer still reads
    await page.setViewportSize({ width: 390, height: 844 });
    await go(page, "/explorer", "Explorer");
    await page.getByTestId("stats").waitFor();
    await shoot(page, "explorer-phone");

    // Sign out: the token is revoked, so the signed list is gone until the next sign-in
    await go(page, "/", "Hashgrid");
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByText("signing out: done").waitFor();
    await page.getByRole("button", { name: "Sign in with Ethereum" }).waitFor();
    await go(page, "/tasks", "My tasks");
    await page.getByText("Sign in with your wallet").waitFor();
    seen.steps.push("signed-out");

    check(cspErrors.length === 0, `no CSP violation: ${cspErrors.join("; ")}`);
  } catch (error) {
    const alerts = current.page ? await current.page.locator('[role="alert"]').allTextContents().catch(() => []) : [];
    seen.failed_alerts = alerts.filter(Boolean);
    if (current.page) await current.page.screenshot({ path: join(OUT, "failure.png"), fullPage: true }).catch(() => {});
    throw error;
  } finally {
    await browser.close();
  }
}

main().then(() => {
  writeFileSync(join(OUT, "journey.json"), JSON.stringify(seen, null, 2));
  console.log(JSON.stringify(seen));
}).catch((error) => {
  writeFileSync(join(OUT, "journey.json"), JSON.stringify({ ...seen, failed: String(error) }, null, 2));
  console.error(error);
  console.log(JSON.stringify(seen));
  process.exit(1);
});
