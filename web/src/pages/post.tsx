// Post a task: a template or an uploaded spec and its inputs (hashed here, in the browser), the price range
// and how many providers can run it, then approve and post from the wallet and follow it.
import { useEffect, useState } from "react";
import { sha256 } from "viem";
import { parse as parseYaml } from "yaml";
import { Notice, useSession } from "../main";
import { AppError, api, clients, grid, haveBlob, signPermit, inWords, postedTaskId, read, send } from "../lib";

type Template = { name: string; title: string; spec: Record<string, unknown>; files: Record<string, string> };
type Estimate = { low: string; high: string; escrow: string; fee_bps: number; providers: number; online: number; notes: string[] };
type Blob = { name: string; sha256: string; bytes: Uint8Array };

async function fileBytes(file: File): Promise<Uint8Array> {
  return new Uint8Array(await file.arrayBuffer());
}

export function PostPage() {
  const { config, account, chainId, signedIn, refresh } = useSession();
  const [templates, setTemplates] = useState<Template[]>([]);
  const [specText, setSpecText] = useState("");
  const [blobs, setBlobs] = useState<Blob[]>([]);
  const [estimate, setEstimate] = useState<Estimate | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [shortfall, setShortfall] = useState<bigint | null>(null);  // the escrow to approve before posting

  const approve = async () => {
    if (!account || shortfall === null) return;
    setError(null);
    setBusy(true);
    setStatus(`approve ${grid(shortfall)} for the escrow in your wallet…`);
    try {
      await send(config, account, "GridToken", "approve", [config.addresses.TaskEscrow, shortfall], "approving the escrow");
      setShortfall(null);
      setStatus(`approved ${grid(shortfall)}: now post the task`);
      refresh();
    } catch (e) {
      setStatus(null);
      setError(inWords(e, "approving the escrow"));
    } finally {
      setBusy(false);
    }
  };

  useEffect(() => {
    api<{ data: Template[] }>("GET", "/app/templates.json").then((t) => setTemplates(t.data))
      .catch((e) => setError(inWords(e, "loading the templates")));
    const repost = sessionStorage.getItem("hashgrid.repost");  // My tasks → Repost
    if (repost) {
      sessionStorage.removeItem("hashgrid.repost");
      setSpecText(JSON.stringify(JSON.parse(repost), null, 2));
    }
  }, []);

  const spec = (): Record<string, unknown> => {
    try {
      return JSON.parse(specText) as Record<string, unknown>;
    } catch (e) {
      throw new AppError(`the spec is not valid JSON: ${(e as Error).message}`);
    }
  };

  const useTemplate = async (name: string) => {
    const template = templates.find((t) => t.name === name);
    if (!template) return;
    setError(null);
    setEstimate(null);
    setStatus(`loading the ${template.title} template…`);
    try {
      const files: Blob[] = [];
      for (const [digest, fileName] of Object.entries(template.files)) {
        const response = await fetch(`/app/templates/files/${digest}`);
        const bytes = new Uint8Array(await response.arrayBuffer());
        files.push({ name: fileName, sha256: sha256(bytes).slice(2), bytes });
      }
      setBlobs(files);
      setSpecText(JSON.stringify(template.spec, null, 2));
      setStatus(`template ${template.title} loaded`);
    } catch (e) {
      setStatus(null);
      setError(inWords(e, "loading the template"));
    }
  };

  const onSpecFile = async (file: File | undefined) => {
    if (!file) return;
    setError(null);
    setEstimate(null);
    const text = new TextDecoder().decode(await fileBytes(file));
    try {
      // YAML (what `hashgrid task init` and examples/*.yaml use) or JSON, shown as JSON; aliases are capped
      const document = /\.ya?ml$/i.test(file.name) ? parseYaml(text, { maxAliasCount: 50 }) : JSON.parse(text);
      setSpecText(JSON.stringify(document, null, 2));
    } catch (e) {
      setError(`${file.name} is not a spec in ${/\.ya?ml$/i.test(file.name) ? "YAML" : "JSON"}: ${(e as Error).message}`);
    }
  };

  const onInputs = async (files: FileList | null) => {
    if (!files) return;
    const added: Blob[] = [];
    for (const file of Array.from(files)) {
      const bytes = await fileBytes(file);
      added.push({ name: file.name, sha256: sha256(bytes).slice(2), bytes });
    }
    setBlobs((old) => [...old, ...added]);
  };

  const check = async () => {
    setError(null);
    setStatus("estimating the price…");
    try {
      const found = await api<Estimate>("POST", "/app/estimate", spec());
      setEstimate(found);
      setStatus(null);
    } catch (e) {
      setStatus(null);
      setError(inWords(e, "estimating the price"));
    }
  };

  const post = async (withPermit = false) => {
    setError(null);
    setBusy(true);
    try {
      if (!account) throw new AppError("connect your wallet first (Connect page)");
      if (!signedIn) throw new AppError("sign in with Ethereum first (Connect page)");
      const document = spec();
      for (const blob of blobs) {
        if (await haveBlob(blob.sha256)) continue;
        setStatus(`uploading ${blob.name} (${blob.bytes.length} bytes)…`);
        await api("PUT", `/blobs/${blob.sha256}`, undefined, blob.bytes as BodyInit);
      }
      setStatus("registering the spec…");
      const registered = await api<{ spec_hash: `0x${string}`; escrow: string }>("POST", "/tasks", document);
      const escrow = BigInt(registered.escrow);
      const balance = await read<bigint>(config, account, "GridToken", "balanceOf", [account]);
      if (balance < escrow) {
        throw new AppError(`too little GRID: the task locks ${grid(escrow)} in escrow and your balance is ${grid(balance)}`);
      }
      const allowance = withPermit ? escrow : await read<bigint>(config, account, "GridToken", "allowance", [account, config.addresses.TaskEscrow]);
      if (allowance < escrow) {
        setShortfall(escrow);
        throw new AppError(`the escrow may spend only ${grid(allowance)} of your GRID and this task locks ${grid(escrow)}: approve ${grid(escrow)} first`);
      }
      setShortfall(null);
      const block = await clients(config, account).public.getBlock();
      const replicas = Number(document.replicas ?? 1);
      const terms = {
        specHash: registered.spec_hash,
        replicas,
        quorum: Number(document.quorum ?? 1),
        maxReplicas: Number(document.max_replicas ?? replicas),
        maxPricePerReplica: BigInt(String(document.max_price_per_replica)),
        deadline: block.timestamp + BigInt(Number(document.deadline_s ?? 3600)),
      };
      let receipt;
      if (withPermit) {
        setStatus(`sign a permit for ${grid(escrow)} in your wallet…`);
        const permit = await signPermit(config, account, config.addresses.TaskEscrow, escrow, terms.deadline);
        setStatus("post the task from your wallet…");
        receipt = await send(config, account, "TaskEscrow", "postTaskWithPermit",
                             [terms, escrow, terms.deadline, permit.v, permit.r, permit.s], "posting the task");
      } else {
        setStatus("post the task from your wallet…");
        receipt = await send(config, account, "TaskEscrow", "postTask", [terms], "posting the task");
      }
      const taskId = postedTaskId(config, receipt.logs);
      setStatus(`task ${taskId} posted`);
      refresh();
      window.location.hash = `#/task/${taskId}`;
    } catch (e) {
      setStatus(null);
      setError(inWords(e, "posting the task"));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <h1>Post a task</h1>
      {chainId !== null && chainId !== config.chain_id && <p className="notice error">Your wallet is on another network: switch on the Connect page.</p>}
      <section className="card" aria-labelledby="spec-title">
        <h2 id="spec-title">1. The spec</h2>
        <div className="row">
          <label htmlFor="template">Start from a template</label>
          <select id="template" defaultValue="" onChange={(e) => void useTemplate(e.target.value)}>
            <option value="" disabled>choose…</option>
            {templates.map((t) => <option key={t.name} value={t.name}>{t.title}</option>)}
          </select>
        </div>
        <div className="row">
          <label htmlFor="spec-file">or upload a spec (YAML or JSON)</label>
          <input id="spec-file" type="file" accept=".yaml,.yml,.json,application/json" onChange={(e) => void onSpecFile(e.target.files?.[0])} />
        </div>
        <label htmlFor="spec">Spec (JSON)</label>
        <textarea id="spec" rows={14} value={specText} onChange={(e) => { setSpecText(e.target.value); setEstimate(null); }} spellCheck={false} />
        <div className="row">
          <label htmlFor="inputs">Input files and module</label>
          <input id="inputs" type="file" multiple onChange={(e) => void onInputs(e.target.files)} />
        </div>
        {blobs.length > 0 && (
          <table>
            <caption>Files to upload (sha256 computed in your browser)</caption>
            <thead><tr><th scope="col">file</th><th scope="col">bytes</th><th scope="col">sha256</th></tr></thead>
            <tbody>{blobs.map((b) => <tr key={b.sha256}><td>{b.name}</td><td>{b.bytes.length}</td><td className="hash">{b.sha256}</td></tr>)}</tbody>
          </table>
        )}
      </section>
      <section className="card" aria-labelledby="price-title">
        <h2 id="price-title">2. Price and providers</h2>
        <button onClick={() => void check()} disabled={!specText}>Check price and providers</button>
        {estimate && (
          <div data-testid="estimate">
            <dl className="facts">
              <dt>Price range</dt><dd>{grid(estimate.low)} – {grid(estimate.high)}</dd>
              <dt>Locked in escrow</dt><dd>{grid(estimate.escrow)} (fee {estimate.fee_bps / 100}%; the rest comes back)</dd>
              <dt>Providers that can run it</dt><dd data-testid="providers-can-run">{estimate.providers} of {estimate.online} online</dd>
            </dl>
            {estimate.notes.map((n) => <p key={n} className="notice error">{n}</p>)}
          </div>
        )}
      </section>
      <section className="card" aria-labelledby="post-title">
        <h2 id="post-title">3. Pay and post</h2>
        <p>The task's escrow is locked from your GRID: approve the escrow to spend it (once, when its allowance is
          too small), then post from your wallet.</p>
        {shortfall !== null && <button onClick={() => void approve()} disabled={busy}>Approve {grid(shortfall)}</button>}
        <button onClick={() => void post()} disabled={busy || !specText}>Post task</button>
        <button onClick={() => void post(true)} disabled={busy || !specText}>Post with a permit</button>
        <p className="muted">With a permit you sign the escrow's allowance (EIP-2612) and send one transaction
          instead of two.</p>
      </section>
      <Notice error={error} status={status} />
    </>
  );
}
