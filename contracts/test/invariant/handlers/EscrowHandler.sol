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
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @dev Drives TaskEscrow and ProviderRegistry as several customers, providers, the matcher, the settler, anyone
/// (expire) and governance, with bounded inputs and time warps. Token movements are read back from the token's
/// Transfer logs (what really moved), so the ghost totals do not trust the contracts' own bookkeeping.
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
    mapping(address => bool) internal isProvider;

    uint256[] public taskIds;
    mapping(uint256 => uint256) public escrowedOf; // computed by the handler from the terms at post
    mapping(uint256 => uint256) public paidOutOf; // paid + fee + refund actually attributed to the task
    mapping(uint256 => bool) public closed;
    mapping(uint256 => uint256) internal roundStartOf; // index of the first replica of the task's latest round
    mapping(uint256 => mapping(address => uint256)) public paidCount;
    mapping(uint256 => mapping(address => bytes32)) internal committedResult;

    uint256 public ghost_escrowed;
    uint256 public ghost_owed; // sum owed by open tasks
    uint256 public ghost_paid;
    uint256 public ghost_refunded;
    uint256 public ghost_fees;
    uint256 public ghost_slashed;
    uint256 public ghost_maxPaidCount;

    mapping(bytes32 => uint256) public calls;
    uint256 internal currentTask;

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
        }
        for (uint256 i; i < 6; ++i) {
            (address p, uint256 key) = makeAddrAndKey(string.concat("provider", vm.toString(i)));
            providers.push(p);
            providerKeys.push(key);
            isProvider[p] = true;
        }
    }

    /// @dev Called by the test after funding: customers approve, providers stake.
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
        (uint8 kk, uint8 qq, uint8 maxK) = _terms(k, q, extra);
        price = uint96(bound(price, 1, MAX_PRICE));
        uint64 deadline = _deadline(life);
        uint256 owed = _owed(maxK, price);
        vm.recordLogs();
        vm.prank(c);
        uint256 id = escrow.postTask(keccak256(abi.encode(block.timestamp, taskIds.length)), kk, qq, maxK, price, deadline);
        _posted(id, owed);
        _process();
        calls["postTask"]++;
    }

    struct PermitPost {
        bytes32 spec;
        uint8 k;
        uint8 q;
        uint8 maxK;
        uint96 price;
        uint64 deadline;
        uint256 owed;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    function postTaskWithPermit(uint256 actor, uint8 k, uint8 q, uint8 extra, uint96 price, uint64 life) public {
        uint256 idx = actor % customers.length;
        address c = customers[idx];
        PermitPost memory pp;
        (pp.k, pp.q, pp.maxK) = _terms(k, q, extra);
        pp.price = uint96(bound(price, 1, MAX_PRICE));
        pp.deadline = _deadline(life);
        pp.owed = _owed(pp.maxK, pp.price);
        pp.spec = keccak256(abi.encode(block.timestamp, taskIds.length));
        vm.prank(c);
        token.approve(address(escrow), 0);
        (pp.v, pp.r, pp.s) = _permit(customerKeys[idx], c, pp.owed);
        vm.recordLogs();
        uint256 id = _callPermit(c, pp);
        _posted(id, pp.owed);
        _process();
        vm.prank(c);
        token.approve(address(escrow), type(uint256).max);
        calls["postTaskWithPermit"]++;
    }

    function _callPermit(address c, PermitPost memory pp) internal returns (uint256) {
        vm.prank(c);
        return escrow.postTaskWithPermit(
            pp.spec, pp.k, pp.q, pp.maxK, pp.price, pp.deadline, pp.owed, block.timestamp, pp.v, pp.r, pp.s
        );
    }

    function cancelTask(uint256 seed) public {
        if (seed % 4 != 0) return; // rarer than posts, so that tasks live on to assignment
        (uint256 id, bool found) = _pick(seed, ITaskEscrow.TaskState.Posted);
        if (!found) return;
        vm.recordLogs();
        vm.prank(escrow.getTask(id).customer);
        escrow.cancelTask(id);
        _process();
        calls["cancelTask"]++;
    }

    // ------------------------------------------------------------------ matcher

    function assign(uint256 seed, uint256 providerSeed) public {
        (uint256 id, address[] memory ps, bool ok) = _assignment(seed, providerSeed);
        if (!ok) return;
        vm.recordLogs();
        vm.prank(matcher);
        escrow.assign(id, ps);
        _process();
        calls["assign"]++;
    }

    function assignMany(uint256 seed, uint256 providerSeed) public {
        (uint256 id, address[] memory ps, bool ok) = _assignment(seed, providerSeed);
        if (!ok) return;
        uint256[] memory ids = new uint256[](1);
        ids[0] = id;
        address[][] memory pss = new address[][](1);
        pss[0] = ps;
        vm.recordLogs();
        vm.prank(matcher);
        escrow.assignMany(ids, pss);
        _process();
        calls["assignMany"]++;
    }

    // ------------------------------------------------------------------ provider

    function commit(uint256 seed, uint256 replicaSeed, uint256 resultSeed) public {
        (uint256 id, address p, bytes32 c, bool ok) = _commitment(seed, replicaSeed, resultSeed);
        if (!ok) return;
        vm.prank(p);
        escrow.commit(id, c);
        calls["commit"]++;
        if (resultSeed % 3 != 0) _commitOthers(id, resultSeed);
    }

    /// @dev Most of the time the rest of the round commits right away too, so that tasks reach reveal and finalize
    /// within a run; the other times replicas are left to miss the window (no-shows).
    function _commitOthers(uint256 id, uint256 resultSeed) internal {
        ITaskEscrow.Replica[] memory reps = escrow.getReplicas(id);
        for (uint256 i = roundStartOf[id]; i < reps.length; ++i) {
            if (reps[i].state != ITaskEscrow.ReplicaState.Assigned) continue;
            address p = reps[i].provider;
            bytes32 result = uint256(keccak256(abi.encode(resultSeed, i))) % 5 == 0 ? OTHER : RESULT;
            committedResult[id][p] = result;
            vm.prank(p);
            escrow.commit(id, keccak256(abi.encode(result, _salt(id, p), p)));
            calls["commit"]++;
        }
    }

    function commitMany(uint256 seed, uint256 replicaSeed, uint256 resultSeed) public {
        (uint256 id, address p, bytes32 c, bool ok) = _commitment(seed, replicaSeed, resultSeed);
        if (!ok) return;
        uint256[] memory ids = new uint256[](1);
        ids[0] = id;
        bytes32[] memory cs = new bytes32[](1);
        cs[0] = c;
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
        ITaskEscrow.Replica[] memory reps = escrow.getReplicas(id);
        for (uint256 i; i < reps.length; ++i) {
            if (reps[i].state != ITaskEscrow.ReplicaState.Committed) continue;
            address p = reps[i].provider;
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
        amount = bound(amount, 1, current);
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

    // ------------------------------------------------------------------ settler

    function finalize(uint256 seed, uint256 paySeed) public {
        (uint256 id, uint96[] memory pay, bool ok) = _settlement(seed, paySeed);
        if (!ok) return;
        vm.recordLogs();
        vm.prank(settler);
        escrow.finalize(id, pay);
        _process();
        calls["finalize"]++;
    }

    function finalizeMany(uint256 seed, uint256 paySeed) public {
        (uint256 id, uint96[] memory pay, bool ok) = _settlement(seed, paySeed);
        if (!ok) return;
        uint256[] memory ids = new uint256[](1);
        ids[0] = id;
        uint96[][] memory pays = new uint96[][](1);
        pays[0] = pay;
        vm.recordLogs();
        vm.prank(settler);
        escrow.finalizeMany(ids, pays);
        _process();
        calls["finalizeMany"]++;
    }

    // ------------------------------------------------------------------ anyone, governance, time

    function expire(uint256 seed, bool open) public {
        if (seed % 3 != 0) return; // expiring jumps past deadlines: rarer, so that tasks reach settlement
        (uint256 id, bool found) = _pick(seed, open ? ITaskEscrow.TaskState.Posted : ITaskEscrow.TaskState.Assigned);
        if (!found) return;
        uint256 expiresAt = uint256(escrow.getTask(id).deadline) + escrow.expiryGrace();
        if (block.timestamp < expiresAt) vm.warp(expiresAt);
        vm.recordLogs();
        escrow.expire(id);
        _process();
        calls["expire"]++;
    }

    function setProtocolFeeBps(uint16 value) public {
        value = uint16(bound(value, 0, escrow.MAX_PROTOCOL_FEE_BPS()));
        vm.prank(admin);
        escrow.setProtocolFeeBps(value);
        calls["setProtocolFeeBps"]++;
    }

    function setSlashBps(uint16 dissent, uint16 noShow, uint16 share) public {
        vm.startPrank(admin);
        escrow.setSlashDissentBps(uint16(bound(dissent, 0, 10_000)));
        escrow.setSlashNoShowBps(uint16(bound(noShow, 0, 10_000)));
        registry.setSlashCustomerShareBps(uint16(bound(share, 0, 10_000)));
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

    /// @dev Tasks whose attributed payouts break "closed: paid + fee + refund == escrowed; open: <= escrowed".
    function taskPayoutViolations() external view returns (uint256 bad) {
        for (uint256 i; i < taskIds.length; ++i) {
            uint256 id = taskIds[i];
            uint256 out = paidOutOf[id];
            if (closed[id] ? out != escrowedOf[id] : out > escrowedOf[id]) ++bad;
        }
    }

    function providerCount() external view returns (uint256) {
        return providers.length;
    }

    function callSummary() external view {
        console.log("-- call summary --");
        string[20] memory names = [
            "postTask", "postTaskWithPermit", "cancelTask", "assign", "assignMany", "commit", "commitMany", "reveal",
            "revealMany", "finalize", "finalizeMany", "expire", "stake", "stakeWithPermit", "requestUnstake",
            "withdraw", "setProtocolFeeBps", "setSlashBps", "warp", ""
        ];
        for (uint256 i; i < 19; ++i) {
            console.log(names[i], calls[bytes32(bytes(names[i]))]);
        }
        console.log("tasks", taskIds.length);
        console.log("ghost_escrowed", ghost_escrowed);
        console.log("ghost_paid", ghost_paid);
        console.log("ghost_refunded", ghost_refunded);
        console.log("ghost_fees", ghost_fees);
        console.log("ghost_slashed", ghost_slashed);
        console.log("ghost_owed", ghost_owed);
    }

    // ------------------------------------------------------------------ internals

    function _terms(uint8 k, uint8 q, uint8 extra) internal pure returns (uint8 kk, uint8 qq, uint8 maxK) {
        kk = uint8(bound(k, 1, 4));
        qq = uint8(bound(q, 1, kk));
        maxK = uint8(bound(uint256(kk) + extra, kk, 6));
    }

    function _deadline(uint64 life) internal view returns (uint64) {
        uint256 windows = uint256(escrow.commitWindow()) + escrow.revealWindow();
        return uint64(block.timestamp + windows + bound(life, 1, 6 hours));
    }

    function _owed(uint8 maxK, uint96 price) internal view returns (uint256) {
        uint256 base = uint256(maxK) * price;
        return base + base * escrow.protocolFeeBps() / 10_000;
    }

    function _posted(uint256 id, uint256 owed) internal {
        taskIds.push(id);
        escrowedOf[id] = owed;
        ghost_escrowed += owed;
        ghost_owed += owed;
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

    function _assignment(uint256 seed, uint256 providerSeed)
        internal
        returns (uint256 id, address[] memory ps, bool ok)
    {
        bool escalate = seed % 4 == 0;
        bool found;
        (id, found) = _pick(seed / 4, escalate ? ITaskEscrow.TaskState.Assigned : ITaskEscrow.TaskState.Posted);
        if (!found) return (0, ps, false);
        ITaskEscrow.Task memory t = escrow.getTask(id);
        uint256 want = escalate ? 1 : t.replicas;
        if (escalate && t.assigned >= t.maxReplicas) return (0, ps, false);
        // leave room for a whole round before the deadline
        uint256 roundEnd = block.timestamp + escrow.commitWindow() + escrow.revealWindow();
        if (t.deadline <= roundEnd) return (0, ps, false);
        ps = _choose(id, want, providerSeed);
        ok = ps.length == want;
        if (ok) roundStartOf[id] = t.assigned;
    }

    function _choose(uint256 id, uint256 want, uint256 providerSeed) internal view returns (address[] memory ps) {
        ITaskEscrow.Replica[] memory reps = escrow.getReplicas(id);
        ps = new address[](want);
        uint256 got;
        uint256 n = providers.length;
        for (uint256 i; i < n && got < want; ++i) {
            address p = providers[(providerSeed + i) % n];
            if (!registry.isEligible(p)) continue;
            bool taken;
            for (uint256 j; j < reps.length; ++j) {
                if (reps[j].provider == p) taken = true;
            }
            if (!taken) ps[got++] = p;
        }
        if (got < want) ps = new address[](0);
    }

    function _commitment(uint256 seed, uint256 replicaSeed, uint256 resultSeed)
        internal
        returns (uint256 id, address p, bytes32 c, bool ok)
    {
        uint256 n = taskIds.length;
        for (uint256 k; k < n; ++k) {
            id = taskIds[(seed + k) % n];
            ITaskEscrow.Task memory t = escrow.getTask(id);
            if (t.state != ITaskEscrow.TaskState.Assigned || block.timestamp > t.commitDeadline) continue;
            ITaskEscrow.Replica[] memory reps = escrow.getReplicas(id);
            for (uint256 i; i < reps.length; ++i) {
                uint256 idx = (replicaSeed + i) % reps.length;
                if (reps[idx].state == ITaskEscrow.ReplicaState.Assigned && idx >= roundStartOf[id]) {
                    p = reps[idx].provider;
                    bytes32 result = resultSeed % 4 == 0 ? OTHER : RESULT;
                    committedResult[id][p] = result;
                    return (id, p, keccak256(abi.encode(result, _salt(id, p), p)), true);
                }
            }
        }
    }

    function _revealer(uint256 seed, uint256 replicaSeed) internal returns (uint256 id, address p, bool ok) {
        uint256 n = taskIds.length;
        for (uint256 k; k < n; ++k) {
            id = taskIds[(seed + k) % n];
            ITaskEscrow.Task memory t = escrow.getTask(id);
            if (t.state != ITaskEscrow.TaskState.Assigned || block.timestamp > t.revealDeadline) continue;
            ITaskEscrow.Replica[] memory reps = escrow.getReplicas(id);
            bool allCommitted = true;
            uint256 committed = type(uint256).max;
            for (uint256 i; i < reps.length; ++i) {
                uint256 idx = (replicaSeed + i) % reps.length;
                if (reps[idx].state == ITaskEscrow.ReplicaState.Assigned) allCommitted = false;
                if (reps[idx].state == ITaskEscrow.ReplicaState.Committed && committed == type(uint256).max) {
                    committed = idx;
                }
            }
            if (committed == type(uint256).max) continue;
            // reveals open once all committed or at the commit deadline: jump there when needed
            if (!allCommitted && block.timestamp <= t.commitDeadline) vm.warp(t.commitDeadline + 1);
            return (id, reps[committed].provider, true);
        }
    }

    function _settlement(uint256 seed, uint256 paySeed) internal returns (uint256 id, uint96[] memory pay, bool ok) {
        bool found;
        (id, found) = _pick(seed, ITaskEscrow.TaskState.Assigned);
        if (!found) return (0, pay, false);
        ITaskEscrow.Task memory t = escrow.getTask(id);
        ITaskEscrow.Replica[] memory reps = escrow.getReplicas(id);
        // finalize is allowed at the latest after the reveal deadline; sometimes jump there
        bool pending;
        for (uint256 i; i < reps.length; ++i) {
            if (reps[i].state != ITaskEscrow.ReplicaState.Revealed) pending = true;
        }
        if (pending && paySeed % 3 == 0 && block.timestamp <= t.revealDeadline) vm.warp(t.revealDeadline + 1);
        // the winner as the contract counts it: unique most-revealed hash with >= quorum votes
        bytes32 winner;
        uint256 votes;
        bool tie;
        for (uint256 i; i < reps.length; ++i) {
            if (reps[i].state != ITaskEscrow.ReplicaState.Revealed) continue;
            uint256 count;
            for (uint256 j; j < reps.length; ++j) {
                if (reps[j].state == ITaskEscrow.ReplicaState.Revealed && reps[j].commitment == reps[i].commitment) {
                    ++count;
                }
            }
            if (count > votes) (winner, votes, tie) = (reps[i].commitment, count, false);
            else if (count == votes && reps[i].commitment != winner) tie = true;
        }
        bool settled = !tie && votes >= t.quorum;
        pay = new uint96[](reps.length);
        for (uint256 i; i < reps.length; ++i) {
            if (settled && reps[i].state == ITaskEscrow.ReplicaState.Revealed && reps[i].commitment == winner) {
                pay[i] = uint96(bound(uint256(keccak256(abi.encode(paySeed, i))), 0, t.maxPricePerReplica));
            }
        }
        ok = true;
    }

    /// @dev Reads the recorded logs: escrow close events set the task that following transfers belong to.
    function _process() internal {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            Vm.Log memory l = logs[i];
            bytes32 sig = l.topics.length != 0 ? l.topics[0] : bytes32(0);
            if (l.emitter == address(escrow)) {
                if (sig == ITaskEscrow.TaskSettled.selector) {
                    uint256 id = uint256(l.topics[1]);
                    (,,, uint256 fee,) = abi.decode(l.data, (bytes32, uint8, uint256, uint256, uint256));
                    paidOutOf[id] += fee;
                    _closed(id);
                } else if (
                    sig == ITaskEscrow.TaskFailed.selector || sig == ITaskEscrow.TaskExpired.selector
                        || sig == ITaskEscrow.TaskCancelled.selector
                ) {
                    _closed(uint256(l.topics[1]));
                }
            } else if (l.emitter == address(token) && sig == TRANSFER) {
                address from = address(uint160(uint256(l.topics[1])));
                address to = address(uint160(uint256(l.topics[2])));
                uint256 amount = abi.decode(l.data, (uint256));
                if (from == address(registry) && (to == treasury || !isProvider[to])) {
                    ghost_slashed += amount;
                } else if (from == address(escrow)) {
                    if (to == treasury) {
                        ghost_fees += amount;
                    } else {
                        paidOutOf[currentTask] += amount;
                        if (isProvider[to]) {
                            ghost_paid += amount;
                            uint256 count = ++paidCount[currentTask][to];
                            if (count > ghost_maxPaidCount) ghost_maxPaidCount = count;
                        } else {
                            ghost_refunded += amount;
                        }
                    }
                }
            }
        }
    }

    function _closed(uint256 id) internal {
        currentTask = id;
        if (!closed[id]) {
            closed[id] = true;
            ghost_owed -= escrowedOf[id];
        }
    }
}
