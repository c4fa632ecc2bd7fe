// One task, followed live: state, replicas, chain events (commits, reveals, settlement), the log stream,
// the accepted hash; verified outputs downloaded and checked against their sha256; the invoice; refunds.
import { useEffect, useRef, useState } from "react";
import { sha256 } from "viem";
import { Notice, useSession } from "../main";
import { api, download, followLogs, grid, inWords, read, send, short } from "../lib";

type Replica = { provider: string; status: string; round?: number; result_hash?: string | null; detail?: string | null };
type Task = {
  task_id: number; status: string; customer: string; replicas: number; quorum: number; max_replicas: number;
  escrowed: string; max_price_per_replica: string; result_hash: string | null; unplaced_reason: string | null;
  spec_hash: string; replica_list?: Replica[];
};
type ChainEvent = { name: string; block_number: number; tx_hash?: string; args: Record<string, unknown> };
type Output = { path: string; sha256: string; size: number };
type Result = { result_hash: string; agreeing: string[]; outputs: Output[] };

const TERMINAL = ["settled", "failed", "cancelled", "expired"];
// the state each chain event moves a task into: the task's history, as the chain recorded it
const STATE_OF: Record<string, string> = {
  TaskPosted: "posted", TaskAssigned: "assigned", ResultCommitted: "committing", ResultRevealed: "revealing",
  TaskSettled: "settled", TaskCancelled: "cancelled", TaskExpired: "expired", TaskFailed: "failed",
};

function history(events: ChainEvent[], live: string[]): string[] {
  const out: string[] = [];
  for (const state of events.map((e) => STATE_OF[e.name]).filter(Boolean)) if (out.at(-1) !== state) out.push(state);
  const now = live.at(-1);  // a state the chain does not show (a provider's `running`), while not final
  if (now && !out.includes(now) && !TERMINAL.includes(out.at(-1) ?? "")) out.push(now);
  return out;
}

const CLOSING: Record<string, string> = { TaskSettled: "settled", TaskFailed: "failed", TaskExpired: "expired", TaskCancelled: "cancelled" };
const OUTCOMES = ["none", "assigned", "committed", "revealed", "agreed", "dissented", "noshow", "released"];

type Invoice = { task_id: number; state: string; customer: string | null; escrowed: string; paid: string; fee: string;
                 refund: string; result_hash: string | null; lines: { provider: string; outcome: string; payment: string }[] };

/** The task's bill as the chain recorded it: billing.invoice.invoice_from_events, over the same events. */
export function invoiceOf(taskId: number, events: ChainEvent[]): Invoice | null {
  const closing = events.find((e) => e.name in CLOSING);
  if (!closing) return null;
  const posted = events.find((e) => e.name === "TaskPosted");
  const amount = (v: unknown) => BigInt(String(v ?? 0));
  const paid = amount(closing.args.paid);
  const fee = amount(closing.args.fee);
  const refund = amount(closing.args.refunded);
  const lines = events.filter((e) => e.name === "ReplicaFinalized")
    .map((e) => ({ provider: String(e.args.provider).toLowerCase(), outcome: OUTCOMES[Number(e.args.outcome)] ?? String(e.args.outcome),
                   payment: amount(e.args.paid).toString() }))
    .sort((a, b) => (BigInt(a.provider) < BigInt(b.provider) ? -1 : 1));
  return {
    task_id: taskId, state: CLOSING[closing.name], customer: posted ? String(posted.args.customer).toLowerCase() : null,
    escrowed: (posted ? amount(posted.args.escrowed) : paid + fee + refund).toString(),
    paid: paid.toString(), fee: fee.toString(), refund: refund.toString(),
    result_hash: closing.name === "TaskSettled" ? String(closing.args.resultHash).toLowerCase() : null, lines,
  };
}

function save(name: string, bytes: Uint8Array | string, type = "application/octet-stream") {
  const url = URL.createObjectURL(new Blob([bytes as BlobPart], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function TaskPage({ taskId }: { taskId: number }) {
  const session = useSession();
  const { config, account, signedIn } = session;
  const [task, setTask] = useState<Task | null>(null);
  const [events, setEvents] = useState<ChainEvent[]>([]);
  const [logs, setLogs] = useState<string[]>([]);
  const [result, setResult] = useState<Result | null>(null);
  const [verified, setVerified] = useState<Record<string, string>>({});
  const [claimable, setClaimable] = useState<bigint>(0n);
  const [states, setStates] = useState<string[]>([]);  // live states (polls and the log stream's `status`)
  const [logNote, setLogNote] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  const done = useRef(false);

  useEffect(() => {  // state and events, polled until the task is final
    let stop = false;
    const poll = async () => {
      try {
        // the customer's view; null until the indexer has seen the task (404), or for another wallet's task
        const detail = signedIn ? await api<Task>("GET", `/tasks/${taskId}`).catch(() => null) : null;
        const pub = await api<{ task: Task | null; events: ChainEvent[] }>("GET", `/explorer/tasks/${taskId}`)
          .catch(() => ({ task: null, events: [] }));  // not indexed yet: the next poll
        if (!detail && !pub.task) setStatus("waiting for the chain indexer to see the task…");
        else setStatus((old) => (old?.startsWith("waiting for the chain") ? null : old));
        if (stop) return;
        setTask(detail ?? pub.task);
        const now = (detail ?? pub.task)?.status;
        if (now) setStates((old) => (old[old.length - 1] === now ? old : [...old, now]));
        setEvents(pub.events);
        const state = (detail ?? pub.task)?.status;
        if (state && TERMINAL.includes(state)) {
          done.current = true;
          if (state === "settled" && signedIn) setResult(await api<Result>("GET", `/tasks/${taskId}/result`));
          if (account) setClaimable(await read<bigint>(config, account, "TaskEscrow", "claimable", [account]));
          return;
        }
      } catch (e) {
        setError(inWords(e, "reading the task"));
      }
      if (!stop) setTimeout(poll, 1000);
    };
    void poll();
    return () => { stop = true; };
  }, [taskId, signedIn, account, session.tick]);

  useEffect(() => {  // the log stream (the customer's own, signed)
    if (!signedIn) return;
    const abort = new AbortController();
    setLogs([]);
    setLogNote(null);
    followLogs(taskId, (kind, data) => {
      if (kind === "status") {
        const now = (JSON.parse(data) as { status?: string }).status;
        if (now) setStates((old) => (old[old.length - 1] === now ? old : [...old, now]));
        return;
      }
      if (kind !== "log") return;
      try {
        const chunk = JSON.parse(data) as { provider?: string; data?: string };
        setLogs((old) => [...old, `[${short(chunk.provider)}] ${(chunk.data ?? "").replace(/\n$/, "")}`]);
      } catch {
        setLogs((old) => [...old, data]);
      }
    }, abort.signal).catch((e) => {
      if (!abort.signal.aborted) setLogNote(inWords(e, "following the logs"));
    });
    return () => abort.abort();
  }, [taskId, signedIn]);

  const getOutput = async (output: Output) => {
    setError(null);
    try {
      const bytes = await download(`/blobs/${output.sha256}`);
      const digest = sha256(bytes).slice(2);
      if (digest !== output.sha256) throw new Error(`sha256 ${digest} does not match the manifest's ${output.sha256}`);
      setVerified((old) => ({ ...old, [output.path]: digest }));
      save(output.path.split("/").pop() || "output", bytes);
    } catch (e) {
      setError(inWords(e, `downloading ${output.path}`));
    }
  };

  const bill = invoiceOf(taskId, events);
  const invoice = () => {
    if (bill) save(`task-${taskId}-invoice.json`, JSON.stringify(bill, null, 2), "application/json");
  };

  const act = (doing: string, fn: string, args: unknown[]) => async () => {
    if (!account) return;
    setError(null);
    setStatus(`${doing}…`);
    try {
      await send(config, account, "TaskEscrow", fn, args, doing);
      setStatus(`${doing}: done`);
      session.refresh();
    } catch (e) {
      setStatus(null);
      setError(inWords(e, doing));
    }
  };

  const mine = task && account && task.customer.toLowerCase() === account.toLowerCase();
  return (
    <>
      <h1>Task {taskId}</h1>
      {!signedIn && <p className="notice">Sign in (Connect page) to see your task's replicas, logs and outputs.</p>}
      {task && (
        <section className="card" aria-labelledby="state-title">
          <h2 id="state-title">State</h2>
          <dl className="facts">
            <dt>Status</dt><dd data-testid="task-status">{task.status}</dd>
            <dt>History</dt><dd data-testid="task-states">{history(events, states).join(" → ")}</dd>
            <dt>Replication</dt><dd>{task.replicas} replicas, quorum {task.quorum} (up to {task.max_replicas})</dd>
            <dt>Escrowed</dt><dd>{grid(task.escrowed)}</dd>
            <dt>Accepted hash</dt><dd className="hash" data-testid="result-hash">{task.result_hash ?? "not yet"}</dd>
            {task.unplaced_reason && <><dt>Why not placed</dt><dd data-testid="unplaced">{task.unplaced_reason}</dd></>}
          </dl>
          {mine && task.status === "posted" && <button onClick={act("cancelling the task", "cancelTask", [BigInt(taskId)])}>Cancel task</button>}
        </section>
      )}
      {task?.replica_list && (
        <section className="card" aria-labelledby="replicas-title">
          <h2 id="replicas-title">Replicas</h2>
          <table>
            <thead><tr><th scope="col">provider</th><th scope="col">status</th><th scope="col">result hash</th></tr></thead>
            <tbody>{task.replica_list.map((r) => (
              <tr key={`${r.provider}-${r.round ?? 0}`}><td>{short(r.provider)}</td><td>{r.status}{r.detail ? `: ${r.detail}` : ""}</td>
                <td className="hash">{r.result_hash ?? "-"}</td></tr>))}</tbody>
          </table>
        </section>
      )}
      <section className="card" aria-labelledby="events-title">
        <h2 id="events-title">On chain</h2>
        <ol className="events" data-testid="events">{events.map((e, i) => <li key={i}>{e.name} <span className="muted">block {e.block_number}</span></li>)}</ol>
      </section>
      <section className="card" aria-labelledby="logs-title">
        <h2 id="logs-title">Logs</h2>
        {logNote ? <p className="notice" data-testid="logs-note">{logNote}</p>
          : <pre className="logs" data-testid="logs" tabIndex={0} aria-label="task logs">{logs.join("\n") || "no logs yet"}</pre>}
      </section>
      {result && (
        <section className="card" aria-labelledby="result-title">
          <h2 id="result-title">Verified result</h2>
          <p>Agreed by {result.agreeing.map(short).join(", ")}.</p>
          <ul>{result.outputs.map((o) => (
            <li key={o.path}>
              <button onClick={() => void getOutput(o)}>Download {o.path}</button> {o.size} bytes
              {verified[o.path] && <span data-testid={`verified-${o.path}`}> · sha256 checked: {verified[o.path]}</span>}
            </li>))}</ul>
          {bill && (
            <table data-testid="invoice">
              <caption>Invoice (from the task's chain events)</caption>
              <tbody>
                <tr><th scope="row">escrowed</th><td>{grid(bill.escrowed, 8)}</td></tr>
                {bill.lines.map((l) => <tr key={l.provider}><th scope="row">{short(l.provider)} ({l.outcome})</th><td>{grid(l.payment, 8)}</td></tr>)}
                <tr><th scope="row">paid</th><td>{grid(bill.paid, 8)}</td></tr>
                <tr><th scope="row">protocol fee</th><td>{grid(bill.fee, 8)}</td></tr>
                <tr><th scope="row">refund</th><td>{grid(bill.refund, 8)}</td></tr>
              </tbody>
            </table>
          )}
          <button onClick={invoice} disabled={!bill}>Download invoice</button>
        </section>
      )}
      {claimable > 0n && (
        <section className="card" aria-labelledby="refund-title">
          <h2 id="refund-title">Refund</h2>
          <p>You can claim <span data-testid="task-claimable">{grid(claimable)}</span> (refunds and credits).</p>
          <button onClick={act("claiming your refund", "claim", [])}>Claim refund</button>
        </section>
      )}
      <Notice error={error} status={status} />
    </>
  );
}
