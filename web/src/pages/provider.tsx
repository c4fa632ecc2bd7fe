// Provider: my stake, unbonding, claimable earnings, rewards and slashes, and what my device offers.
import { useEffect, useState } from "react";
import { parseUnits } from "viem";
import { Notice, useSession } from "../main";
import { api, grid, inWords, read, send } from "../lib";

type Info = { provider: Record<string, unknown> & { online?: boolean; runtimes?: string[]; total_cpus?: number; total_memory_mb?: number; gpus?: number; prices?: Record<string, string> } };
type Reputation = { score: number; trusted: boolean; verified: number; dissents: number; caught: number; no_shows: number };
type Ledger = { total_rewards: string; total_slashed: string; reputation: Reputation | null };

export function ProviderPage() {
  const session = useSession();
  const { config, account, tick } = session;
  const [stake, setStake] = useState<bigint | null>(null);
  const [unbonding, setUnbonding] = useState<[bigint, bigint] | null>(null);
  const [claimable, setClaimable] = useState<bigint>(0n);
  const [info, setInfo] = useState<Info | null>(null);
  const [ledger, setLedger] = useState<Ledger | null>(null);
  const [amount, setAmount] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);

  useEffect(() => {  // another account: the last one's messages no longer apply
    setError(null);
    setStatus(null);
  }, [account]);

  useEffect(() => {
    if (!account) return;
    const me = account.toLowerCase();
    Promise.all([
      read<bigint>(config, account, "ProviderRegistry", "stakeOf", [account]),
      read<[bigint, bigint]>(config, account, "ProviderRegistry", "unbondingOf", [account]),
      read<bigint>(config, account, "TaskEscrow", "claimable", [account]),
    ]).then(([s, u, c]) => { setStake(s); setUnbonding(u); setClaimable(c); })
      .catch((e) => setError(inWords(e, "reading your stake")));
    api<Info>("GET", `/providers/${me}/info`).then(setInfo).catch(() => setInfo(null));
    api<Ledger>("GET", `/explorer/providers/${me}`).then(setLedger).catch(() => setLedger(null));
  }, [account, tick]);

  const act = (doing: string, contract: string, fn: string, args: () => unknown[]) => async () => {
    if (!account) return;
    setError(null);
    setStatus(`${doing}…`);
    try {
      const values = args();
      if (fn === "stake") {
        await send(config, account, "GridToken", "approve", [config.addresses.ProviderRegistry, values[0]], "approving the stake");
      }
      await send(config, account, contract, fn, values, doing);
      setStatus(`${doing}: done`);
      session.refresh();
    } catch (e) {
      setStatus(null);
      setError(inWords(e, doing));
    }
  };
  const wei = () => [parseUnits(amount || "0", 18)];

  if (!account) return <><h1>Provider</h1><p className="notice">Connect the wallet your provider daemon signs with.</p></>;
  const p = info?.provider;
  return (
    <>
      <h1>Provider</h1>
      <section className="card" aria-labelledby="stake-title">
        <h2 id="stake-title">Stake and earnings</h2>
        <dl className="facts">
          <dt>Stake</dt><dd data-testid="stake">{grid(stake)}</dd>
          <dt>Unbonding</dt><dd>{unbonding && unbonding[0] > 0n ? `${grid(unbonding[0])}, released ${new Date(Number(unbonding[1]) * 1000).toISOString()}` : "nothing"}</dd>
          <dt>Claimable earnings</dt><dd>{grid(claimable)}</dd>
          <dt>Earned in total</dt><dd>{grid(ledger?.total_rewards)}</dd>
          <dt>Slashed in total</dt><dd>{grid(ledger?.total_slashed)}</dd>
          <dt>Reputation</dt><dd>{ledger?.reputation ? `${ledger.reputation.score.toFixed(2)}${ledger.reputation.trusted ? " (trusted)" : ""}: ${ledger.reputation.verified} verified, ${ledger.reputation.dissents} dissents, ${ledger.reputation.no_shows} no-shows` : "-"}</dd>
        </dl>
        <div className="row">
          <label htmlFor="amount">Amount (GRID)</label>
          <input id="amount" inputMode="decimal" value={amount} onChange={(e) => setAmount(e.target.value)} />
          <button onClick={act("staking", "ProviderRegistry", "stake", wei)}>Stake</button>
          <button onClick={act("requesting to unstake", "ProviderRegistry", "requestUnstake", wei)}>Unstake</button>
          <button onClick={act("withdrawing", "ProviderRegistry", "withdraw", () => [])}>Withdraw unbonded</button>
          <button onClick={act("claiming earnings", "TaskEscrow", "claim", () => [])} disabled={claimable === 0n}>Claim earnings</button>
        </div>
      </section>
      <section className="card" aria-labelledby="device-title">
        <h2 id="device-title">My device</h2>
        {p ? (
          <dl className="facts" data-testid="device">
            <dt>Online</dt><dd>{p.online ? "yes" : "no"}</dd>
            <dt>Runtimes</dt><dd>{(p.runtimes ?? []).join(", ")}</dd>
            <dt>Offer</dt><dd>{p.total_cpus} cores, {p.total_memory_mb} MB, {p.gpus ?? 0} GPU</dd>
            <dt>Prices</dt><dd>{Object.entries(p.prices ?? {}).map(([k, v]) => `${k.replace(/_/g, " ")} ${grid(v, 8)}`).join(", ")}</dd>
          </dl>
        ) : <p>No provider daemon has registered this address with the marketplace (`hashgrid provider run`).</p>}
      </section>
      <Notice error={error} status={status} />
    </>
  );
}
