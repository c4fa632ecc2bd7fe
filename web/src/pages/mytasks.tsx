// My tasks: the signed-in customer's tasks (GET /tasks), filtered by state; cancel a posted one, repost one
// (its spec is fetched back by spec hash and opened on the Post page).
import { useEffect, useState } from "react";
import { Notice, useSession } from "../main";
import { api, grid, inWords, send, short } from "../lib";

type TaskRow = { task_id: number; status: string; spec_hash: string; escrowed: string; result_hash: string | null; unplaced_reason: string | null };

export function MyTasksPage() {
  const session = useSession();
  const { config, account, signedIn, tick } = session;
  const [rows, setRows] = useState<TaskRow[]>([]);
  const [status, setStatus] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [note, setNote] = useState<string | null>(null);

  useEffect(() => {
    if (!signedIn) return;
    api<{ data: TaskRow[] }>("GET", "/tasks?limit=500").then((r) => setRows(r.data))
      .catch((e) => setError(inWords(e, "listing your tasks")));
  }, [signedIn, tick]);

  const cancel = async (taskId: number) => {
    if (!account) return;
    setError(null);
    try {
      await send(config, account, "TaskEscrow", "cancelTask", [BigInt(taskId)], `cancelling task ${taskId}`);
      setNote(`task ${taskId} cancelled; its escrow is claimable`);
      session.refresh();
    } catch (e) {
      setError(inWords(e, `cancelling task ${taskId}`));
    }
  };

  const repost = async (row: TaskRow) => {
    setError(null);
    try {
      const bytes = await (await fetch(`/blobs/${row.spec_hash.replace(/^0x/, "")}`, {
        headers: { Authorization: `Bearer ${sessionStorage.getItem("hashgrid.token") ?? ""}` } })).text();
      sessionStorage.setItem("hashgrid.repost", bytes);
      window.location.hash = "#/post";
    } catch (e) {
      setError(inWords(e, "reposting"));
    }
  };

  if (!signedIn) return <><h1>My tasks</h1><p className="notice">Sign in with your wallet (Connect page) to list your tasks.</p></>;
  const shown = rows.filter((r) => !status || r.status === status);
  return (
    <>
      <h1>My tasks</h1>
      <div className="row">
        <label htmlFor="my-status">Status</label>
        <select id="my-status" value={status} onChange={(e) => setStatus(e.target.value)}>
          <option value="">any</option>
          {[...new Set(rows.map((r) => r.status))].map((s) => <option key={s}>{s}</option>)}
        </select>
      </div>
      <div className="scroll" tabIndex={0} role="region" aria-label="my tasks table (scrolls sideways)">
        <table data-testid="my-tasks">
          <thead><tr><th scope="col">task</th><th scope="col">status</th><th scope="col">escrowed</th><th scope="col">result</th><th scope="col">actions</th></tr></thead>
          <tbody>{shown.map((r) => (
            <tr key={r.task_id}>
              <td><a href={`#/task/${r.task_id}`}>#{r.task_id}</a></td><td>{r.status}</td><td>{grid(r.escrowed)}</td>
              <td className="hash">{r.result_hash ? short(r.result_hash) : r.unplaced_reason ?? "-"}</td>
              <td>
                {r.status === "posted" && <button onClick={() => void cancel(r.task_id)} aria-label={`Cancel task ${r.task_id}`}>Cancel</button>}
                <button onClick={() => void repost(r)} aria-label={`Repost task ${r.task_id}`}>Repost</button>
              </td>
            </tr>))}</tbody>
        </table>
      </div>
      <Notice error={error} status={note} />
    </>
  );
}
