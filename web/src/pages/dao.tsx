// DAO: proposals with state, votes and quorum (from the governor's events and views); propose a parameter
// change or a treasury payment; delegate; vote; queue and execute when due.
import { useEffect, useState } from "react";
import { type Address, type Hex, encodeFunctionData, keccak256, parseUnits, toHex } from "viem";
import { Notice, useSession } from "../main";
import { clients, grid, inWords, read, send, short } from "../lib";

const STATES = ["pending", "active", "canceled", "defeated", "succeeded", "queued", "expired", "executed"];
const PARAMETERS: [string, string, string][] = [  // [label, contract, setter]
  ["protocol fee (basis points)", "TaskEscrow", "setProtocolFeeBps"],
  ["commit window (seconds)", "TaskEscrow", "setCommitWindow"],
  ["reveal window (seconds)", "TaskEscrow", "setRevealWindow"],
  ["dissent slash (basis points)", "TaskEscrow", "setSlashDissentBps"],
  ["no-show slash (basis points)", "TaskEscrow", "setSlashNoShowBps"],
];

type Proposal = { id: bigint; description: string; targets: Address[]; values: bigint[]; calldatas: Hex[];
                  state: string; votes: [bigint, bigint, bigint]; quorum: bigint | null; snapshot: bigint; voted: boolean };

export function DaoPage() {
  const session = useSession();
  const { config, account, tick } = session;
  const [proposals, setProposals] = useState<Proposal[]>([]);
  const [power, setPower] = useState<{ votes: bigint; delegate: Address; threshold: bigint } | null>(null);
  const [kind, setKind] = useState("parameter");
  const [parameter, setParameter] = useState(0);
  const [value, setValue] = useState("");
  const [to, setTo] = useState("");
  const [amount, setAmount] = useState("");
  const [description, setDescription] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);

  useEffect(() => {
    if (!account) return;
    const load = async () => {
      if (stop) return;
      const c = clients(config, account).public;
      const governor = { address: config.addresses.GridGovernor, abi: config.abis.GridGovernor };
      const created = await c.getContractEvents({ ...governor, eventName: "ProposalCreated", fromBlock: BigInt(config.start_block) });
      const found: Proposal[] = [];
      for (const event of created) {
        const a = event.args as { proposalId: bigint; targets: Address[]; values: bigint[]; calldatas: Hex[]; description: string; voteStart: bigint };
        const [state, votes, snapshot, voted] = await Promise.all([
          c.readContract({ ...governor, functionName: "state", args: [a.proposalId] }) as Promise<number>,
          c.readContract({ ...governor, functionName: "proposalVotes", args: [a.proposalId] }) as Promise<[bigint, bigint, bigint]>,
          c.readContract({ ...governor, functionName: "proposalSnapshot", args: [a.proposalId] }) as Promise<bigint>,
          c.readContract({ ...governor, functionName: "hasVoted", args: [a.proposalId, account] }) as Promise<boolean>,
        ]);
        const now = await c.getBlockNumber();
        const quorum = snapshot < now  // the quorum is a share of the supply at the snapshot: known after it
          ? await c.readContract({ ...governor, functionName: "quorum", args: [snapshot] }) as bigint : null;
        found.push({ id: a.proposalId, description: a.description, targets: a.targets, values: a.values, calldatas: a.calldatas,
                     state: STATES[state] ?? String(state), votes, quorum, snapshot, voted });
      }
      setProposals(found.reverse());
      const [votes, delegate, threshold] = await Promise.all([
        read<bigint>(config, account, "GridToken", "getVotes", [account]),
        read<Address>(config, account, "GridToken", "delegates", [account]),
        read<bigint>(config, account, "GridGovernor", "proposalThreshold"),
      ]);
      setPower({ votes, delegate, threshold });
    };
    let stop = false;
    const again = () => {  // states move with blocks and time: re-read every few seconds while shown
      load().catch((e) => setError(inWords(e, "reading the proposals")))
        .finally(() => { if (!stop) timer = setTimeout(again, 3000); });
    };
    let timer = setTimeout(again, 0);
    return () => { stop = true; clearTimeout(timer); };
  }, [account, tick]);

  const run = async (doing: string, contract: string, fn: string, args: unknown[]) => {
    if (!account) return;
    setError(null);
    setStatus(`${doing}…`);
    try {
      await send(config, account, contract, fn, args, doing);
      setStatus(`${doing}: done`);
      session.refresh();
    } catch (e) {
      setStatus(null);
      setError(inWords(e, doing));
    }
  };

  const propose = () => {
    try {
      let target: Address;
      let calldata: Hex;
      if (kind === "parameter") {
        const [, contract, setter] = PARAMETERS[parameter];
        target = config.addresses[contract];
        calldata = encodeFunctionData({ abi: config.abis[contract], functionName: setter, args: [BigInt(value || "0")] });
      } else {
        target = config.addresses.GridToken;
        calldata = encodeFunctionData({ abi: config.abis.GridToken, functionName: "transfer", args: [to as Address, parseUnits(amount || "0", 18)] });
      }
      const text = description || (kind === "parameter" ? `Set ${PARAMETERS[parameter][0]} to ${value}` : `Pay ${amount} GRID to ${to}`);
      void run("proposing", "GridGovernor", "propose", [[target], [0n], [calldata], text]);
    } catch (e) {
      setError(inWords(e, "preparing the proposal"));
    }
  };

  const lifecycle = (p: Proposal, fn: "queue" | "execute") =>
    run(`${fn === "queue" ? "queueing" : "executing"} the proposal`, "GridGovernor", fn,
        [p.targets, p.values, p.calldatas, keccak256(toHex(p.description))]);

  if (!account) return <><h1>DAO</h1><p className="notice">Connect your wallet to vote and propose.</p></>;
  return (
    <>
      <h1>DAO</h1>
      {power && (
        <section className="card" aria-labelledby="power-title">
          <h2 id="power-title">My voting power</h2>
          <dl className="facts">
            <dt>Votes</dt><dd data-testid="votes">{grid(power.votes)}</dd>
            <dt>Delegated to</dt><dd>{power.delegate === "0x0000000000000000000000000000000000000000" ? "nobody (your tokens do not vote yet)" : power.delegate}</dd>
            <dt>Needed to propose</dt><dd>{grid(power.threshold)}</dd>
          </dl>
          <button onClick={() => void run("delegating to yourself", "GridToken", "delegate", [account])}>Delegate to myself</button>
        </section>
      )}
      <section className="card" aria-labelledby="proposals-title">
        <h2 id="proposals-title">Proposals</h2>
        {proposals.length === 0 && <p>No proposals yet.</p>}
        <ul className="proposals" data-testid="proposals">{proposals.map((p) => (
          <li key={p.id.toString()} className="card">
            <h3>{p.description}</h3>
            <p>State: <strong data-testid="proposal-state">{p.state}</strong> · for {grid(p.votes[1])}, against {grid(p.votes[0])}, abstain {grid(p.votes[2])} · quorum {p.quorum === null ? `set at block ${p.snapshot}` : grid(p.quorum)}</p>
            <p className="muted">id {short(p.id.toString())}, snapshot block {p.snapshot.toString()}</p>
            {p.state === "active" && !p.voted && (
              <div className="row">
                <button onClick={() => void run("voting for", "GridGovernor", "castVote", [p.id, 1])}>Vote for</button>
                <button onClick={() => void run("voting against", "GridGovernor", "castVote", [p.id, 0])}>Vote against</button>
                <button onClick={() => void run("abstaining", "GridGovernor", "castVote", [p.id, 2])}>Abstain</button>
              </div>
            )}
            {p.voted && <p>You voted.</p>}
            {p.state === "succeeded" && <button onClick={() => void lifecycle(p, "queue")}>Queue</button>}
            {p.state === "queued" && <button onClick={() => void lifecycle(p, "execute")}>Execute</button>}
          </li>))}</ul>
      </section>
      <section className="card" aria-labelledby="propose-title">
        <h2 id="propose-title">Propose</h2>
        <fieldset className="row">
          <legend>What</legend>
          <label><input type="radio" name="kind" checked={kind === "parameter"} onChange={() => setKind("parameter")} /> a parameter change</label>
          <label><input type="radio" name="kind" checked={kind === "payment"} onChange={() => setKind("payment")} /> a treasury payment</label>
        </fieldset>
        {kind === "parameter" ? (
          <div className="row">
            <label htmlFor="parameter">Parameter</label>
            <select id="parameter" value={parameter} onChange={(e) => setParameter(Number(e.target.value))}>
              {PARAMETERS.map(([label], i) => <option key={label} value={i}>{label}</option>)}
            </select>
            <label htmlFor="value">New value</label>
            <input id="value" inputMode="numeric" value={value} onChange={(e) => setValue(e.target.value)} />
          </div>
        ) : (
          <div className="row">
            <label htmlFor="to">Pay to</label>
            <input id="to" value={to} onChange={(e) => setTo(e.target.value)} placeholder="0x…" />
            <label htmlFor="pay">Amount (GRID)</label>
            <input id="pay" inputMode="decimal" value={amount} onChange={(e) => setAmount(e.target.value)} />
          </div>
        )}
        <label htmlFor="description">Description</label>
        <input id="description" value={description} onChange={(e) => setDescription(e.target.value)} />
        <button onClick={propose}>Propose</button>
      </section>
      <Notice error={error} status={status} />
    </>
  );
}
