// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {CommonBase} from "forge-std/Base.sol";
import {StdCheats} from "forge-std/StdCheats.sol";
import {StdUtils} from "forge-std/StdUtils.sol";
import {Vm} from "forge-std/Vm.sol";
import {console} from "forge-std/console.sol";

import {GridToken} from "../../../src/GridToken.sol";
import {ProviderRegistry} from "../../../src/ProviderRegistry.sol";
import {TaskEscrow} from "../../../src/TaskEscrow.sol";
import {ITaskEscrow} from "../../../src/interfaces/ITaskEscrow.sol";
import {IProviderRegistry} from "../../../src/interfaces/IProviderRegistry.sol";

/// @dev Drives TaskEscrow and ProviderRegistry as several customers, providers, the matcher, the settler, anyone
/// (expire, claimFor) and governance, with bounded inputs and time warps. The replica lists live here as ghost state
/// (the escrow keeps none): the handler hands them back sorted to finalize and expire. What the contracts did is
/// measured, not taken from their bookkeeping: credits are the changes of every actor's `claimable` across a call,
/// tokens moved are the token's Transfer logs; the close events are used only to attribute credits to tasks, and are
/// themselves checked against the credits that really appeared.
contract EscrowHandler is CommonBase, StdCheats, StdUtils {
    bytes32 internal constant TRANSFER = keccak256("Transfer(address,address,uint256)");
    bytes32 internal constant RESULT = keccak256("result");
    bytes32 internal constant OTHER = keccak256("other");
    uint96 internal constant MAX_PRICE = 1_000e18;

    GridToken public token;
    ProviderRegistry public registry;
    TaskEscrow public escrow;
    address public admin;
    address public matcher;
    address public settler;
    address public treasury;

    address[] public customers;
    uint256[] internal customerKeys;
    address[] public providers;
    uint256[] internal providerKeys;
    /// @dev customers, providers, treasury: every account the escrow may credit
    address[] internal accounts;

    uint256[] public taskIds;
    mapping(uint256 => uint256) public escrowedOf; // computed here from the terms at post
    mapping(uint256 => uint256) public creditedOf; // credits attributed to the task by its close events
    mapping(uint256 => bool) public closed;
    mapping(uint256 => address[]) internal replicasOf; // ghost replica list, in assignment order
    mapping(uint256 => mapping(address => uint256)) internal roundOf; // the round a replica was assigned in
    mapping(uint256 => uint256) internal roundNow;
    mapping(uint256 => mapping(address => bytes32)) internal committedResult;
    mapping(uint256 => mapping(address => uint256)) public paidCount;

    uint256 public ghost_escrowed; // pulled by posts (Transfer logs into the escrow)
    uint256 public ghost_owed; // owed by open tasks (computed from the terms)
    uint256 public ghost_credits; // sum of claimable over all accounts, from observed changes
    uint256 public ghost_claimed; // left the escrow (Transfer logs out of it)
    uint256 public ghost_paid; // credited to providers
    uint256 public ghost_slashed; // taken from providers' stake and unbonding by finalize (measured on the stakes)
    uint256 public ghost_slashToTreasury; // the treasury's token balance gained during finalize calls
    uint256 public ghost_slashToParties; // customers' and providers' token balances gained during finalize calls
    uint256 public ghost_slashEvents; // the amounts the registry's Slashed events report
    uint256 public ghost_maxPaidCount;
    uint256 public ghost_creditMismatches; // calls whose close events disagree with the credits that appeared

    mapping(bytes32 => uint256) public calls;

    constructor(GridToken token_, ProviderRegistry registry_, TaskEscrow escrow_, address admin_, address treasury_) {
        (token, registry, escrow, admin, treasury) = (token_, registry_, escrow_, admin_, treasury_);
        matcher = makeAddr("matcher");
        settler = makeAddr("settler");
        vm.startPrank(admin);
        escrow.grantRole(escrow.MATCHER_ROLE(), matcher);
        escrow.grantRole(escrow.SETTLER_ROLE(), settler);
        vm.stopPrank();
        for (uint256 i; i < 3; ++i) {
            (address c, uint256 key) = makeAddrAndKey(string.concat("customer", vm.toString(i)));
            customers.push(c);
            customerKeys.push(key);
            accounts.push(c);
        }
        for (uint256 i; i < 6; ++i) {
            (address p, uint256 key) = makeAddrAndKey(string.concat("provider", vm.toString(i)));
            providers.push(p);
            providerKeys.push(key);
            accounts.push(p);
        }
        accounts.push(treasury_);
    }

    /// @dev Called by the test after funding: customers approve, providers register and stake.
    function bootstrap() external {
        for (uint256 i; i < customers.length; ++i) {
            vm.prank(customers[i]);
            token.approve(address(escrow), type(uint256).max);
        }
        for (uint256 i; i < providers.length; ++i) {
            vm.startPrank(providers[i]);
            token.approve(address(registry), type(uint256).max);
            registry.register(address(0), keccak256(abi.encode(i)), "caps");
            registry.stake(500e18);
            vm.stopPrank();
        }
    }

    // ------------------------------------------------------------------ customer

    function postTask(uint256 actor, uint8 k, uint8 q, uint8 extra, uint96 price, uint64 life) public {
        address c = customers[actor % customers.length];
        ITaskEscrow.TaskTerms memory t = _newTerms(k, q, extra, price, life);
        uint256 owed = _owed(t);
        uint256[] memory before = _snapshot();
        vm.recordLogs();
        vm.prank(c);
        uint256 id = escrow.postTask(t);
        _posted(id, owed);
        _observe(before);
        calls["postTask"]++;
    }

    function postTasks(uint256 actor, uint8 count, uint8 k, uint8 q, uint8 extra, uint96 price, uint64 life) public {
        address c = customers[actor % customers.length];
        count = uint8(bound(count, 1, 3));
        ITaskEscrow.TaskTerms[] memory ts = new ITaskEscrow.TaskTerms[](count);
        uint256[] memory owed = new uint256[](count);
        for (uint256 i; i < count; ++i) {
            ts[i] = _newTerms(uint8(_next(k, i)), q, uint8(_next(extra, i)), uint96(_next(price, i)), life);
            ts[i].specHash = keccak256(abi.encode(ts[i].specHash, i));
            owed[i] = _owed(ts[i]);
        }
        uint256[] memory before = _snapshot();
        vm.recordLogs();
        vm.prank(c);
        uint256 first = escrow.postTasks(ts);
        for (uint256 i; i < count; ++i) {
            _posted(first + i, owed[i]);
        }
        _observe(before);
        calls["postTasks"]++;
    }

    function postTaskWithPermit(uint256 actor, uint8 k, uint8 q, uint8 extra, uint96 price, uint64 life) public {
        uint256 idx = actor % customers.length;
        address c = customers[idx];
        ITaskEscrow.TaskTerms memory t = _newTerms(k, q, extra, price, life);
        uint256 owed = _owed(t);
        vm.prank(c);
        token.approve(address(escrow), 0);
        (uint8 v, bytes32 r, bytes32 s) = _permit(customerKeys[idx], c, owed);
        uint256[] memory before = _snapshot();
        vm.recordLogs();
        vm.prank(c);
        uint256 id = escrow.postTaskWithPermit(t, owed, block.timestamp, v, r, s);
        _posted(id, owed);
        _observe(before);
        vm.prank(c);
        token.approve(address(escrow), type(uint256).max);
        calls["postTaskWithPermit"]++;
    }

    function cancelTask(uint256 seed) public {
        if (seed % 4 != 0) return; // rarer than posts, so that tasks live on to assignment
        (uint256 id, bool found) = _pick(seed, ITaskEscrow.TaskState.Posted);
        if (!found) return;
        uint256[] memory before = _snapshot();
        vm.recordLogs();
        vm.prank(escrow.getTask(id).customer);
        escrow.cancelTask(id);
        _observe(before);
        calls["cancelTask"]++;
    }

    // ------------------------------------------------------------------ matcher

    function assign(uint256 seed, uint256 providerSeed) public {
        (uint256 id, address[] memory ps, bool ok) = _assignment(seed, providerSeed);
        if (!ok) return;
        vm.prank(matcher);
        escrow.assign(id, ps);
        _assigned(id, ps);
        calls["assign"]++;
    }

    /// @dev One or two tasks in one call (the registry locks the whole batch at once).
    function assignMany(uint256 seed, uint256 providerSeed) public {
        (uint256 a, address[] memory pa, bool okA) = _assignment(seed, providerSeed);
        if (!okA) return;
        (uint256 b, address[] memory pb, bool okB) = _assignment(_next(seed, 1), _next(providerSeed, 1));
        bool two = okB && b != a;
        uint256[] memory ids = new uint256[](two ? 2 : 1);
        address[][] memory pss = new address[][](ids.length);
        (ids[0], pss[0]) = (a, pa);
        if (two) (ids[1], pss[1]) = (b, pb);
        vm.prank(matcher);
        escrow.assignMany(ids, pss);
        _assigned(a, pa);
        if (two) _assigned(b, pb);
        calls["assignMany"]++;
    }

    // ------------------------------------------------------------------ provider

    function commit(uint256 seed, uint256 replicaSeed, uint256 resultSeed) public {
        (uint256 id, address p, bool ok) = _committer(seed, replicaSeed);
        if (!ok) return;
        vm.prank(p);
        escrow.commit(id, _commitment(id, p, resultSeed));
        calls["commit"]++;
        if (resultSeed % 3 != 0) _commitOthers(id, resultSeed);
    }

    /// @dev Most of the time the rest of the round commits right away too, so that tasks reach reveal and finalize
    /// within a run; the other times replicas are left to miss the window (no-shows).
    function _commitOthers(uint256 id, uint256 resultSeed) internal {
        address[] memory reps = replicasOf[id];
        for (uint256 i; i < reps.length; ++i) {
            address p = reps[i];
            if (_state(id, p) != ITaskEscrow.ReplicaState.Assigned || roundOf[id][p] != roundNow[id]) continue;
            vm.prank(p);
            escrow.commit(id, _commitment(id, p, uint256(keccak256(abi.encode(resultSeed, i)))));
            calls["commit"]++;
        }
    }

    /// @dev A provider commits to all the tasks where it can, in one call.
    function commitMany(uint256 seed, uint256 resultSeed) public {
        address p = providers[seed % providers.length];
        uint256 n;
        uint256[] memory ids = new uint256[](taskIds.length);
        bytes32[] memory cs = new bytes32[](taskIds.length);
        for (uint256 i; i < taskIds.length; ++i) {
            uint256 id = taskIds[i];
            ITaskEscrow.Task memory t = escrow.getTask(id);
            if (t.state != ITaskEscrow.TaskState.Assigned || block.timestamp > t.commitDeadline) continue;
            if (_state(id, p) != ITaskEscrow.ReplicaState.Assigned || roundOf[id][p] != roundNow[id]) continue;
            (ids[n], cs[n]) = (id, _commitment(id, p, _next(resultSeed, i)));
            ++n;
        }
        if (n == 0) return;
        assembly {
            mstore(ids, n)
            mstore(cs, n)
        }
        vm.prank(p);
        escrow.commitMany(ids, cs);
        calls["commitMany"]++;
    }

    function reveal(uint256 seed, uint256 replicaSeed) public {
        (uint256 id, address p, bool ok) = _revealer(seed, replicaSeed);
        if (!ok) return;
        vm.prank(p);
        escrow.reveal(id, committedResult[id][p], _salt(id, p));
        calls["reveal"]++;
        if (replicaSeed % 3 != 0) _revealOthers(id);
    }

    /// @dev Most of the time the other committed replicas reveal right away too.
    function _revealOthers(uint256 id) internal {
        address[] memory reps = replicasOf[id];
        for (uint256 i; i < reps.length; ++i) {
            address p = reps[i];
            if (_state(id, p) != ITaskEscrow.ReplicaState.Committed) continue;
            vm.prank(p);
            escrow.reveal(id, committedResult[id][p], _salt(id, p));
            calls["reveal"]++;
        }
    }

    function revealMany(uint256 seed, uint256 replicaSeed) public {
        (uint256 id, address p, bool ok) = _revealer(seed, replicaSeed);
        if (!ok) return;
        uint256[] memory ids = new uint256[](1);
        ids[0] = id;
        bytes32[] memory rs = new bytes32[](1);
        rs[0] = committedResult[id][p];
        bytes32[] memory ss = new bytes32[](1);
        ss[0] = _salt(id, p);
        vm.prank(p);
        escrow.revealMany(ids, rs, ss);
        calls["revealMany"]++;
    }

    // ------------------------------------------------------------------ lifecycle

    /// @dev Moves one open task a step along its life (assign, everyone commits, everyone reveals, finalize), so
    /// that runs of 100 calls settle tasks and not only start them. Weighted up in the target selectors.
    function progress(uint256 seed, uint256 paySeed) public {
        uint256 n = taskIds.length;
        if (n == 0) return;
        for (uint256 k; k < n; ++k) {
            uint256 id = taskIds[_next(seed % n, k) % n];
            ITaskEscrow.Task memory t = escrow.getTask(id);
            if (t.state == ITaskEscrow.TaskState.Posted) {
                (uint256 chosen, address[] memory ps, bool ok) = _assignmentOf(id, false, paySeed);
                if (!ok) continue;
                vm.prank(matcher);
                escrow.assign(chosen, ps);
                _assigned(chosen, ps);
            } else if (t.state == ITaskEscrow.TaskState.Assigned) {
                if (t.roundCommitted != t.roundSize && block.timestamp <= t.commitDeadline) {
                    _commitOthers(id, paySeed);
                } else if (_hasCommitted(id) && block.timestamp <= t.revealDeadline) {
                    if (t.roundCommitted != t.roundSize && block.timestamp <= t.commitDeadline) {
                        vm.warp(t.commitDeadline + 1);
                    }
                    _revealOthers(id);
                } else {
                    // finalize may need the reveal deadline to have passed
                    if (block.timestamp <= t.revealDeadline && _hasCommitted(id)) vm.warp(uint256(t.revealDeadline) + 1);
                    if (t.roundCommitted != t.roundSize && block.timestamp <= t.commitDeadline) {
                        vm.warp(uint256(t.commitDeadline) + 1);
                    }
                    _finalizeOne(id, paySeed);
                }
            } else {
                continue;
            }
            calls["progress"]++;
            return;
        }
    }

    function _hasCommitted(uint256 id) internal view returns (bool) {
        address[] memory reps = replicasOf[id];
        for (uint256 i; i < reps.length; ++i) {
            if (_state(id, reps[i]) == ITaskEscrow.ReplicaState.Committed) return true;
        }
        return false;
    }

    // ------------------------------------------------------------------ settler

    function finalize(uint256 seed, uint256 paySeed) public {
        (uint256 id, bool ok) = _finalizable(seed, paySeed);
        if (!ok) return;
        _finalizeOne(id, paySeed);
    }

    function _finalizeOne(uint256 id, uint256 paySeed) internal {
        ITaskEscrow.ReplicaReport[] memory report = _report(id, paySeed);
        uint256[] memory before = _snapshot();
        uint256[] memory wallets = _walletSnapshot();
        vm.recordLogs();
        vm.prank(settler);
        escrow.finalize(id, report);
        _observe(before);
        _observeSlashes(wallets);
        calls["finalize"]++;
    }

    /// @dev One to three tasks in one call (credits tallied per batch, one unlock for all).
    function finalizeMany(uint256 seed, uint256 paySeed, uint8 count) public {
        count = uint8(bound(count, 1, 3));
        uint256[] memory ids = new uint256[](count);
        ITaskEscrow.ReplicaReport[][] memory reports = new ITaskEscrow.ReplicaReport[][](count);
        uint256 n;
        for (uint256 i; i < count; ++i) {
            (uint256 id, bool ok) = _finalizable(_next(seed, i * 7), _next(paySeed, i));
            if (!ok) continue;
            bool dup;
            for (uint256 j; j < n; ++j) {
                if (ids[j] == id) dup = true;
            }
            if (dup) continue;
            (ids[n], reports[n]) = (id, _report(id, _next(paySeed, i)));
            ++n;
        }
        if (n == 0) return;
        assembly {
            mstore(ids, n)
            mstore(reports, n)
        }
        uint256[] memory before = _snapshot();
        uint256[] memory wallets = _walletSnapshot();
        vm.recordLogs();
        vm.prank(settler);
        escrow.finalizeMany(ids, reports);
        _observe(before);
        _observeSlashes(wallets);
        calls["finalizeMany"]++;
    }

    // ------------------------------------------------------------------ anyone, governance, time

    function expire(uint256 seed, bool open) public {
        if (seed % 3 != 0) return; // expiring jumps past deadlines: rarer, so that tasks reach settlement
        (uint256 id, bool found) = _pick(seed, open ? ITaskEscrow.TaskState.Posted : ITaskEscrow.TaskState.Assigned);
        if (!found) return;
        uint256 expiresAt = uint256(escrow.getTask(id).deadline) + escrow.expiryGrace();
        if (block.timestamp < expiresAt) vm.warp(expiresAt);
        uint256[] memory before = _snapshot();
        vm.recordLogs();
        escrow.expire(id, _sorted(replicasOf[id]));
        _observe(before);
        calls["expire"]++;
    }

    function claim(uint256 actor) public {
        address a = accounts[actor % accounts.length];
        if (escrow.claimable(a) == 0) return;
        uint256[] memory before = _snapshot();
        vm.recordLogs();
        vm.prank(a);
        escrow.claim();
        _observe(before);
        calls["claim"]++;
    }

    function claimFor(uint256 actor, uint256 caller) public {
        address a = accounts[actor % accounts.length];
        if (escrow.claimable(a) == 0) return;
        uint256[] memory before = _snapshot();
        vm.recordLogs();
        vm.prank(accounts[caller % accounts.length]);
        escrow.claimFor(a);
        _observe(before);
        calls["claimFor"]++;
    }

    function stake(uint256 actor, uint256 amount) public {
        address p = providers[actor % providers.length];
        amount = bound(amount, 1, 300e18);
        token.transfer(p, amount);
        vm.prank(p);
        registry.stake(amount);
        calls["stake"]++;
    }

    function stakeWithPermit(uint256 actor, uint256 amount) public {
        uint256 idx = actor % providers.length;
        address p = providers[idx];
        amount = bound(amount, 1, 300e18);
        token.transfer(p, amount);
        vm.prank(p);
        token.approve(address(registry), 0);
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                p,
                address(registry),
                amount,
                token.nonces(p),
                block.timestamp
            )
        );
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(providerKeys[idx], keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash)));
        vm.prank(p);
        registry.stakeWithPermit(amount, block.timestamp, v, r, s);
        vm.prank(p);
        token.approve(address(registry), type(uint256).max);
        calls["stakeWithPermit"]++;
    }

    function requestUnstake(uint256 actor, uint256 amount) public {
        address p = providers[actor % providers.length];
        uint256 current = registry.stakeOf(p);
        if (current == 0 || registry.activeAssignments(p) != 0) return;
        // mostly keep the provider eligible (at least the minimum left), one time in four take up to all of it
        uint256 minimum = registry.minStake();
        uint256 most = current > minimum && amount % 4 != 0 ? current - minimum : current;
        amount = bound(amount, 1, most);
        vm.prank(p);
        registry.requestUnstake(amount);
        calls["requestUnstake"]++;
    }

    function withdraw(uint256 actor) public {
        address p = providers[actor % providers.length];
        (uint256 amount, uint64 release) = registry.unbondingOf(p);
        if (amount == 0) return;
        if (block.timestamp < release) vm.warp(release);
        vm.prank(p);
        registry.withdraw();
        calls["withdraw"]++;
    }

    function setProtocolFeeBps(uint16 value) public {
        value = uint16(bound(value, 0, escrow.MAX_PROTOCOL_FEE_BPS()));
        vm.prank(admin);
        escrow.setProtocolFeeBps(value);
        calls["setProtocolFeeBps"]++;
    }

    function setSlashBps(uint16 dissent, uint16 noShow) public {
        vm.startPrank(admin);
        escrow.setSlashDissentBps(uint16(bound(dissent, 0, 10_000)));
        escrow.setSlashNoShowBps(uint16(bound(noShow, 0, 10_000)));
        vm.stopPrank();
        calls["setSlashBps"]++;
    }

    function warp(uint256 secs) public {
        vm.warp(block.timestamp + bound(secs, 1, 45 minutes));
        calls["warp"]++;
    }

    // ------------------------------------------------------------------ views for the invariants

    function taskCount() external view returns (uint256) {
        return taskIds.length;
    }

    /// @dev Breaches of "a closed task's credits sum to its escrow, an open one's to at most that", plus calls whose
    /// close events disagree with the credits that really appeared.
    function taskPayoutViolations() external view returns (uint256 bad) {
        for (uint256 i; i < taskIds.length; ++i) {
            uint256 id = taskIds[i];
            uint256 out = creditedOf[id];
            if (closed[id] ? out != escrowedOf[id] : out > escrowedOf[id]) ++bad;
        }
        bad += ghost_creditMismatches;
    }

    function providerCount() external view returns (uint256) {
        return providers.length;
    }

    function callSummary() external view {
        console.log("-- call summary --");
        string[24] memory names = [
            "postTask", "postTasks", "postTaskWithPermit", "cancelTask", "assign", "assignMany", "commit",
            "commitMany", "reveal", "revealMany", "finalize", "finalizeMany", "expire", "claim", "claimFor", "stake",
            "stakeWithPermit", "requestUnstake", "withdraw", "setProtocolFeeBps", "setSlashBps", "warp", "progress", ""
        ];
        for (uint256 i; i < 23; ++i) {
            console.log(names[i], calls[bytes32(bytes(names[i]))]);
        }
        uint256 settled;
        uint256 failed;
        for (uint256 i; i < taskIds.length; ++i) {
            ITaskEscrow.TaskState s = escrow.getTask(taskIds[i]).state;
            if (s == ITaskEscrow.TaskState.Settled) ++settled;
            if (s == ITaskEscrow.TaskState.Failed) ++failed;
        }
        console.log("tasks", taskIds.length);
        console.log("  settled", settled);
        console.log("  failed", failed);
        console.log("ghost_escrowed", ghost_escrowed);
        console.log("ghost_owed", ghost_owed);
        console.log("ghost_credits", ghost_credits);
        console.log("ghost_claimed", ghost_claimed);
        console.log("ghost_paid", ghost_paid);
        console.log("ghost_slashed", ghost_slashed);
        console.log("ghost_slashToTreasury", ghost_slashToTreasury);
        console.log("ghost_slashToParties", ghost_slashToParties);
    }

    // ------------------------------------------------------------------ internals: tasks

    function _newTerms(uint8 k, uint8 q, uint8 extra, uint96 price, uint64 life)
        internal
        view
        returns (ITaskEscrow.TaskTerms memory t)
    {
        t.replicas = uint8(bound(k, 1, 4));
        t.quorum = uint8(bound(q, 1, t.replicas));
        t.maxReplicas = uint8(bound(uint256(t.replicas) + extra, t.replicas, 6));
        t.maxPricePerReplica = uint96(bound(price, 1, MAX_PRICE));
        uint256 windows = uint256(escrow.commitWindow()) + escrow.revealWindow();
        t.deadline = uint64(block.timestamp + windows + bound(life, 1, 6 hours));
        t.specHash = keccak256(abi.encode(block.timestamp, taskIds.length));
    }

    function _owed(ITaskEscrow.TaskTerms memory t) internal view returns (uint256) {
        uint256 base = uint256(t.maxReplicas) * t.maxPricePerReplica;
        return base + base * escrow.protocolFeeBps() / 10_000;
    }

    function _posted(uint256 id, uint256 owed) internal {
        taskIds.push(id);
        escrowedOf[id] = owed;
        ghost_owed += owed;
    }

    function _assigned(uint256 id, address[] memory ps) internal {
        uint256 round = ++roundNow[id];
        for (uint256 i; i < ps.length; ++i) {
            replicasOf[id].push(ps[i]);
            roundOf[id][ps[i]] = round;
        }
    }

    function _state(uint256 id, address p) internal view returns (ITaskEscrow.ReplicaState s) {
        (s,) = escrow.replicaOf(id, p);
    }

    function _pick(uint256 seed, ITaskEscrow.TaskState state) internal view returns (uint256 id, bool found) {
        uint256 n = taskIds.length;
        if (n == 0) return (0, false);
        uint256 start = seed % n;
        for (uint256 i; i < n; ++i) {
            id = taskIds[(start + i) % n];
            if (escrow.getTask(id).state == state) return (id, true);
        }
        return (0, false);
    }

    function _salt(uint256 id, address p) internal pure returns (bytes32) {
        return keccak256(abi.encode("salt", id, p));
    }

    function _commitment(uint256 id, address p, uint256 resultSeed) internal returns (bytes32) {
        bytes32 result = resultSeed % 5 == 0 ? OTHER : RESULT;
        committedResult[id][p] = result;
        return keccak256(abi.encode(result, _salt(id, p), p));
    }

    function _permit(uint256 key, address owner, uint256 value) internal view returns (uint8, bytes32, bytes32) {
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                owner,
                address(escrow),
                value,
                token.nonces(owner),
                block.timestamp
            )
        );
        return vm.sign(key, keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash)));
    }

    /// @dev A Posted task (its first round) or, one time in four, an Assigned one (one escalation replica).
    function _assignment(uint256 seed, uint256 providerSeed)
        internal
        view
        returns (uint256 id, address[] memory ps, bool ok)
    {
        bool escalate = seed % 4 == 0;
        bool found;
        (id, found) = _pick(seed / 4, escalate ? ITaskEscrow.TaskState.Assigned : ITaskEscrow.TaskState.Posted);
        if (!found) return (0, ps, false);
        return _assignmentOf(id, escalate, providerSeed);
    }

    function _assignmentOf(uint256 id_, bool escalate, uint256 providerSeed)
        internal
        view
        returns (uint256 id, address[] memory ps, bool ok)
    {
        id = id_;
        ITaskEscrow.Task memory t = escrow.getTask(id);
        uint256 want = escalate ? 1 : t.replicas;
        if (escalate && t.assigned >= t.maxReplicas) return (0, ps, false);
        // leave room for a whole round before the deadline
        uint256 roundEnd = block.timestamp + escrow.commitWindow() + escrow.revealWindow();
        if (t.deadline <= roundEnd) return (0, ps, false);
        ps = _choose(id, want, providerSeed);
        ok = ps.length == want;
    }

    function _choose(uint256 id, uint256 want, uint256 providerSeed) internal view returns (address[] memory ps) {
        address[] memory reps = replicasOf[id];
        ps = new address[](want);
        uint256 got;
        uint256 n = providers.length;
        for (uint256 i; i < n && got < want; ++i) {
            address p = providers[_next(providerSeed % n, i) % n];
            if (!registry.isEligible(p)) continue;
            bool taken;
            for (uint256 j; j < reps.length; ++j) {
                if (reps[j] == p) taken = true;
            }
            if (!taken) ps[got++] = p;
        }
        if (got < want) ps = new address[](0);
    }

    function _committer(uint256 seed, uint256 replicaSeed) internal view returns (uint256 id, address p, bool ok) {
        uint256 n = taskIds.length;
        for (uint256 k; k < n; ++k) {
            id = taskIds[_next(seed % n, k) % n];
            ITaskEscrow.Task memory t = escrow.getTask(id);
            if (t.state != ITaskEscrow.TaskState.Assigned || block.timestamp > t.commitDeadline) continue;
            address[] memory reps = replicasOf[id];
            for (uint256 i; i < reps.length; ++i) {
                p = reps[_next(replicaSeed % reps.length, i) % reps.length];
                if (_state(id, p) == ITaskEscrow.ReplicaState.Assigned && roundOf[id][p] == roundNow[id]) {
                    return (id, p, true);
                }
            }
        }
    }

    function _revealer(uint256 seed, uint256 replicaSeed) internal returns (uint256 id, address p, bool ok) {
        uint256 n = taskIds.length;
        for (uint256 k; k < n; ++k) {
            id = taskIds[_next(seed % n, k) % n];
            ITaskEscrow.Task memory t = escrow.getTask(id);
            if (t.state != ITaskEscrow.TaskState.Assigned || block.timestamp > t.revealDeadline) continue;
            address[] memory reps = replicasOf[id];
            for (uint256 i; i < reps.length; ++i) {
                p = reps[_next(replicaSeed % reps.length, i) % reps.length];
                if (_state(id, p) != ITaskEscrow.ReplicaState.Committed) continue;
                // reveals open once the round committed or at the commit deadline: jump there when needed
                if (t.roundCommitted != t.roundSize && block.timestamp <= t.commitDeadline) {
                    vm.warp(t.commitDeadline + 1);
                }
                return (id, p, true);
            }
        }
    }

    /// @dev An Assigned task the settler may finalize now (jumping past its reveal deadline one time in three when
    /// it may not yet).
    function _finalizable(uint256 seed, uint256 paySeed) internal returns (uint256 id, bool ok) {
        bool found;
        (id, found) = _pick(seed, ITaskEscrow.TaskState.Assigned);
        if (!found) return (0, false);
        ITaskEscrow.Task memory t = escrow.getTask(id);
        bool revealOver = block.timestamp > t.revealDeadline;
        bool pending = t.roundCommitted != t.roundSize && block.timestamp <= t.commitDeadline;
        address[] memory reps = replicasOf[id];
        for (uint256 i; i < reps.length; ++i) {
            if (_state(id, reps[i]) == ITaskEscrow.ReplicaState.Committed) pending = true;
        }
        if (!pending || revealOver) return (id, true);
        if (paySeed % 3 != 0) return (0, false);
        vm.warp(uint256(t.revealDeadline) + 1);
        return (id, true);
    }

    /// @dev The settler's report: every replica, sorted, with what it revealed and a payment for those agreeing with
    /// the result the escrow will accept (unique most-revealed hash with at least `quorum` votes).
    function _report(uint256 id, uint256 paySeed) internal view returns (ITaskEscrow.ReplicaReport[] memory rs) {
        address[] memory reps = _sorted(replicasOf[id]);
        ITaskEscrow.Task memory t = escrow.getTask(id);
        bool[] memory revealed = new bool[](reps.length);
        for (uint256 i; i < reps.length; ++i) {
            revealed[i] = _state(id, reps[i]) == ITaskEscrow.ReplicaState.Revealed;
        }
        bytes32 winner;
        uint256 votes;
        bool tie;
        for (uint256 i; i < reps.length; ++i) {
            if (!revealed[i]) continue;
            bytes32 h = committedResult[id][reps[i]];
            uint256 count;
            for (uint256 j; j < reps.length; ++j) {
                if (revealed[j] && committedResult[id][reps[j]] == h) ++count;
            }
            if (count > votes) (winner, votes, tie) = (h, count, false);
            else if (count == votes && h != winner) tie = true;
        }
        bool settled = !tie && votes >= t.quorum;
        rs = new ITaskEscrow.ReplicaReport[](reps.length);
        for (uint256 i; i < reps.length; ++i) {
            rs[i].provider = reps[i];
            if (revealed[i]) rs[i].resultHash = committedResult[id][reps[i]];
            if (settled && revealed[i] && rs[i].resultHash == winner) {
                rs[i].payment = uint96(bound(uint256(keccak256(abi.encode(paySeed, i))), 0, t.maxPricePerReplica));
            }
        }
    }

    /// @dev seed + i, wrapping (fuzzed seeds go up to 2^256 - 1).
    function _next(uint256 seed, uint256 i) internal pure returns (uint256) {
        unchecked {
            return seed + i;
        }
    }

    function _sorted(address[] memory ps) internal pure returns (address[] memory out) {
        out = new address[](ps.length);
        for (uint256 i; i < ps.length; ++i) {
            address a = ps[i];
            uint256 j = i;
            for (; j > 0 && out[j - 1] > a; --j) {
                out[j] = out[j - 1];
            }
            out[j] = a;
        }
    }

    // ------------------------------------------------------------------ internals: measuring

    function _snapshot() internal view returns (uint256[] memory balances) {
        balances = new uint256[](accounts.length);
        for (uint256 i; i < accounts.length; ++i) {
            balances[i] = escrow.claimable(accounts[i]);
        }
    }

    struct Call {
        uint256 reported; // credits the close events report
        uint256[] reportedTo; // of which to each account (payments only: ReplicaFinalized)
        uint256 lastTask;
    }

    /// @dev Credits that appeared (claimable changes) against those reported (close events); tokens that moved.
    function _observe(uint256[] memory before) internal {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        Call memory c;
        c.reportedTo = new uint256[](accounts.length);
        for (uint256 i; i < logs.length; ++i) {
            _log(logs[i], c);
        }
        // what really appeared, per account
        uint256 appeared;
        uint256 gone;
        for (uint256 i; i < accounts.length; ++i) {
            uint256 nowBalance = escrow.claimable(accounts[i]);
            if (nowBalance >= before[i]) {
                uint256 added = nowBalance - before[i];
                appeared += added;
                // a provider credited more than its reported payments was paid again for the same task
                if (i >= customers.length && i < customers.length + providers.length && added > c.reportedTo[i]) {
                    _countPayment(c.lastTask, accounts[i]);
                }
            } else {
                gone += before[i] - nowBalance;
            }
        }
        ghost_credits = ghost_credits + appeared - gone;
        if (appeared != c.reported) ++ghost_creditMismatches;
    }

    function _log(Vm.Log memory l, Call memory c) internal {
        bytes32 sig = l.topics.length != 0 ? l.topics[0] : bytes32(0);
        if (l.emitter == address(escrow)) {
            if (sig == ITaskEscrow.ReplicaFinalized.selector) {
                uint256 id = uint256(l.topics[1]);
                address p = address(uint160(uint256(l.topics[2])));
                (, uint256 paid) = abi.decode(l.data, (uint8, uint256));
                if (paid != 0) {
                    creditedOf[id] += paid;
                    c.reported += paid;
                    c.reportedTo[_index(p)] += paid;
                    ghost_paid += paid;
                    _countPayment(id, p);
                }
                c.lastTask = id;
            } else if (sig == ITaskEscrow.TaskSettled.selector) {
                uint256 id = uint256(l.topics[1]);
                (,,, uint256 fee, uint256 refund) = abi.decode(l.data, (bytes32, uint8, uint256, uint256, uint256));
                _close(id, fee + refund, c);
            } else if (
                sig == ITaskEscrow.TaskFailed.selector || sig == ITaskEscrow.TaskExpired.selector
                    || sig == ITaskEscrow.TaskCancelled.selector
            ) {
                _close(uint256(l.topics[1]), abi.decode(l.data, (uint256)), c);
            }
        } else if (l.emitter == address(token) && sig == TRANSFER) {
            address from = address(uint160(uint256(l.topics[1])));
            address to = address(uint160(uint256(l.topics[2])));
            uint256 amount = abi.decode(l.data, (uint256));
            if (to == address(escrow)) ghost_escrowed += amount;
            else if (from == address(escrow)) ghost_claimed += amount;
        } else if (l.emitter == address(registry) && sig == IProviderRegistry.Slashed.selector) {
            (uint256 slashedAmount,) = abi.decode(l.data, (uint256, address));
            ghost_slashEvents += slashedAmount;
        }
    }

    /// @dev What a finalize call can move out of the registry: every provider's stake plus unbonding (index 0), the
    /// treasury's token balance (1), then each customer's and provider's token balance (the task's possible parties,
    /// sybils included: any customer may own any provider).
    function _walletSnapshot() internal view returns (uint256[] memory w) {
        w = new uint256[](2 + customers.length + providers.length);
        for (uint256 i; i < providers.length; ++i) {
            (uint256 unbonding,) = registry.unbondingOf(providers[i]);
            w[0] += registry.stakeOf(providers[i]) + unbonding;
        }
        w[1] = token.balanceOf(treasury);
        for (uint256 i; i < customers.length; ++i) {
            w[2 + i] = token.balanceOf(customers[i]);
        }
        for (uint256 i; i < providers.length; ++i) {
            w[2 + customers.length + i] = token.balanceOf(providers[i]);
        }
    }

    /// @dev Where the stake a finalize call took went: measured on balances, not on the registry's events.
    function _observeSlashes(uint256[] memory before) internal {
        uint256[] memory w = _walletSnapshot();
        // finalize never adds stake nor takes from the treasury's wallet: either would be tokens handed to someone,
        // counted as reaching a party (a revert here would be swallowed: fail_on_revert is off)
        if (w[0] <= before[0]) ghost_slashed += before[0] - w[0];
        else ghost_slashToParties += w[0] - before[0];
        if (w[1] >= before[1]) ghost_slashToTreasury += w[1] - before[1];
        else ghost_slashToParties += before[1] - w[1];
        for (uint256 i = 2; i < w.length; ++i) {
            if (w[i] > before[i]) ghost_slashToParties += w[i] - before[i];
        }
    }

    function _close(uint256 id, uint256 credited, Call memory c) internal {
        creditedOf[id] += credited;
        c.reported += credited;
        if (!closed[id]) {
            closed[id] = true;
            ghost_owed -= escrowedOf[id];
        }
    }

    function _countPayment(uint256 id, address p) internal {
        uint256 count = ++paidCount[id][p];
        if (count > ghost_maxPaidCount) ghost_maxPaidCount = count;
    }

    function _index(address a) internal view returns (uint256) {
        for (uint256 i; i < accounts.length; ++i) {
            if (accounts[i] == a) return i;
        }
        revert("unknown account");
    }
}
