// The public explorer: network statistics with charts, tasks with their verification evidence (a task's page
// shows its chain events), providers with stake, reputation, earnings, slashes, device and filters.
import { useEffect, useState } from "react";
import { Notice, useSession } from "../main";
import { api, grid, inWords, short } from "../lib";

type TaskRow = { task_id: number; status: string; customer: string; replicas: number; quorum: number; escrowed: string;
                 max_price_per_replica: string; result_hash: string | null; created_at: string; unplaced_reason: string | null };
type ProviderRow = { address: string; stake: string; reputation: number; online: boolean; runtimes?: string[];
                     gpus?: number; total_cpus?: number; total_memory_mb?: number; gpu_model?: string | null; prices?: Record<string, string>;
                     capabilities?: Record<string, unknown>; running: number; free_cpus: number; free_gpus: number };
type Stats = { providers_total: number; providers_online: number; capacity: { cpus: number; memory_mb: number; gpus: number };
               free: { cpus: number; memory_mb: number; gpus: number }; tasks_by_state: Record<string, number>; events_indexed: number };
type Ledger = { total_rewards: string; total_slashed: string; slashes: unknown[]; rewards: unknown[] };

/** A labelled bar chart in SVG: the numbers are also in the title and a hidden table for screen readers. */
export function Bars({ title, data, format = String }: { title: string; data: [string, number][]; format?: (n: number) => string }) {
  const max = Math.max(1, ...data.map(([, v]) => v));
  const width = 320;
  const bar = 22;
  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      <svg role="img" aria-label={`${title}: ${data.map(([k, v]) => `${k} ${format(v)}`).join(", ")}`}
           viewBox={`0 0 ${width} ${data.length * (bar + 6) + 4}`} width="100%">
        {data.map(([label, value], i) => (
          <g key={label} transform={`translate(0 ${i * (bar + 6) + 2})`}>
            <text x="0" y={bar * 0.7} className="chart-label">{label}</text>
            <rect x="110" y="0" height={bar} width={Math.max(2, ((width - 200) * value) / max)} className="chart-bar" />
            <text x={114 + ((width - 200) * value) / max} y={bar * 0.7} className="chart-value">{format(value)}</text>
          </g>
        ))}
      </svg>
    </figure>
  );
}

function overTime(rows: TaskRow[]): [string, number][] {
  const buckets = new Map<string, number>();
  for (const row of rows) {
    const key = row.created_at.slice(0, 13).replace("T", " ") + "h";
    buckets.set(key, (buckets.get(key) ?? 0) + 1);
  }
  return [...buckets.entries()].sort().slice(-8);
}

export function ExplorerPage({ route }: { route: string }) {
  const { tick } = useSession();
  const [stats, setStats] = useState<Stats | null>(null);
  const [tasks, setTasks] = useState<TaskRow[]>([]);
  const [providers, setProviders] = useState<ProviderRow[]>([]);
  const [ledgers, setLedgers] = useState<Record<string, Ledger>>({});
  const [filter, setFilter] = useState({ runtime: "", gpu: false, maxFixed: "", online: false, status: "" });
  const [error, setError] = useState<string | null>(null);
  void route;

  useEffect(() => {
    let stop = false;
    const load = async () => {
      try {
        const [s, t, p] = await Promise.all([
          api<Stats>("GET", "/explorer/stats"),
          api<{ data: TaskRow[] }>("GET", "/explorer/tasks?limit=500"),
          api<{ data: ProviderRow[] }>("GET", "/explorer/providers?limit=500"),
        ]);
        if (stop) return;
        setStats(s);
        setTasks(t.data);
        setProviders(p.data);
        const entries = await Promise.all(p.data.map(async (row) =>
          [row.address, await api<Ledger>("GET", `/explorer/providers/${row.address}`)] as const));
        if (!stop) setLedgers(Object.fromEntries(entries));
      } catch (e) {
        setError(inWords(e, "reading the explorer"));
      }
      if (!stop) setTimeout(load, 3000);
    };
    void load();
    return () => { stop = true; };
  }, [tick]);

  const shown = providers.filter((p) =>
    (!filter.runtime || (p.runtimes ?? []).includes(filter.runtime)) &&
    (!filter.gpu || (p.gpus ?? 0) > 0) &&
    (!filter.online || p.online) &&
    (!filter.maxFixed || BigInt(p.prices?.fixed ?? "0") <= BigInt(Math.floor(Number(filter.maxFixed) * 1e6)) * 10n ** 12n));
  const shownTasks = tasks.filter((t) => !filter.status || t.status === filter.status);
  const runtimes = [...new Set(providers.flatMap((p) => p.runtimes ?? []))].sort();
  const fixedPrices = providers.map((p) => [short(p.address), Number(BigInt(p.prices?.fixed ?? "0") / 10n ** 12n) / 1e6] as [string, number]);
  const slashes = providers.map((p) => [short(p.address), Number(BigInt(ledgers[p.address]?.total_slashed ?? "0") / 10n ** 12n) / 1e6] as [string, number]);

  return (
    <>
      <h1>Explorer</h1>
      {stats && (
        <section className="card" aria-labelledby="stats-title">
          <h2 id="stats-title">Network</h2>
          <dl className="facts" data-testid="stats">
            <dt>Providers online</dt><dd>{stats.providers_online} of {stats.providers_total}</dd>
            <dt>CPU cores</dt><dd>{stats.free.cpus} free of {stats.capacity.cpus}</dd>
            <dt>Memory</dt><dd>{stats.free.memory_mb} MB free of {stats.capacity.memory_mb} MB</dd>
            <dt>GPUs</dt><dd>{stats.free.gpus} free of {stats.capacity.gpus}</dd>
            <dt>Chain events indexed</dt><dd>{stats.events_indexed}</dd>
          </dl>
          <div className="charts">
            <Bars title="Tasks by state" data={Object.entries(stats.tasks_by_state)} />
            <Bars title="Tasks over time (by hour posted)" data={overTime(tasks)} />
            <Bars title="Capacity online (cores)" data={[["free", stats.free.cpus], ["in use", stats.capacity.cpus - stats.free.cpus]]} />
            <Bars title="Fixed price per replica (GRID)" data={fixedPrices} format={(n) => n.toFixed(4)} />
            <Bars title="Slashed (GRID)" data={slashes} format={(n) => n.toFixed(4)} />
          </div>
        </section>
      )}
      <section className="card" aria-labelledby="tasks-title">
        <h2 id="tasks-title">Tasks</h2>
        <div className="row">
          <label htmlFor="status-filter">Status</label>
          <select id="status-filter" value={filter.status} onChange={(e) => setFilter({ ...filter, status: e.target.value })}>
            <option value="">any</option>
            {["posted", "assigned", "committed", "revealed", "settled", "failed", "cancelled", "expired"].map((s) => <option key={s}>{s}</option>)}
          </select>
        </div>
        <div className="scroll" tabIndex={0} role="region" aria-label="tasks table (scrolls sideways)">
          <table data-testid="explorer-tasks">
            <thead><tr><th scope="col">task</th><th scope="col">status</th><th scope="col">customer</th><th scope="col">replicas</th><th scope="col">escrowed</th><th scope="col">accepted hash</th></tr></thead>
            <tbody>{shownTasks.map((t) => (
              <tr key={t.task_id}><td><a href={`#/task/${t.task_id}`}>#{t.task_id}</a></td><td>{t.status}</td><td>{short(t.customer)}</td>
                <td>{t.replicas} (q {t.quorum})</td><td>{grid(t.escrowed)}</td><td className="hash">{t.result_hash ? short(t.result_hash) : t.unplaced_reason ?? "-"}</td></tr>))}</tbody>
          </table>
        </div>
      </section>
      <section className="card" aria-labelledby="providers-title">
        <h2 id="providers-title">Providers</h2>
        <fieldset className="row">
          <legend>Filters</legend>
          <label htmlFor="runtime-filter">Runtime</label>
          <select id="runtime-filter" value={filter.runtime} onChange={(e) => setFilter({ ...filter, runtime: e.target.value })}>
            <option value="">any</option>{runtimes.map((r) => <option key={r}>{r}</option>)}
          </select>
          <label><input type="checkbox" checked={filter.gpu} onChange={(e) => setFilter({ ...filter, gpu: e.target.checked })} /> has a GPU</label>
          <label><input type="checkbox" checked={filter.online} onChange={(e) => setFilter({ ...filter, online: e.target.checked })} /> online</label>
          <label htmlFor="price-filter">Fixed price at most (GRID)</label>
          <input id="price-filter" inputMode="decimal" size={8} value={filter.maxFixed} onChange={(e) => setFilter({ ...filter, maxFixed: e.target.value })} />
        </fieldset>
        <div className="scroll" tabIndex={0} role="region" aria-label="providers table (scrolls sideways)">
          <table data-testid="explorer-providers">
            <thead><tr><th scope="col">provider</th><th scope="col">online</th><th scope="col">stake</th><th scope="col">reputation</th>
              <th scope="col">earned</th><th scope="col">slashed</th><th scope="col">device</th><th scope="col">runtimes</th></tr></thead>
            <tbody>{shown.map((p) => (
              <tr key={p.address}><td title={p.address}>{short(p.address)}</td><td>{p.online ? "yes" : "no"}</td><td>{grid(p.stake)}</td>
                <td>{p.reputation.toFixed(2)}</td><td>{grid(ledgers[p.address]?.total_rewards)}</td><td>{grid(ledgers[p.address]?.total_slashed)}</td>
                <td>{p.total_cpus ?? "?"} cores, {p.total_memory_mb ?? "?"} MB{p.gpus ? `, ${p.gpus} × ${p.gpu_model ?? "GPU"}` : ""}</td><td>{(p.runtimes ?? []).join(", ")}</td></tr>))}</tbody>
          </table>
        </div>
      </section>
      <Notice error={error} />
    </>
  );
}
