// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";
import {ITaskEscrow} from "./interfaces/ITaskEscrow.sol";

/// @title TaskEscrow
/// @dev Holds customers' payments for compute tasks and runs each task's life (see ITaskEscrow): post (funds
/// locked; one pull per batch), assign (matcher; providers locked in the ProviderRegistry), commit/reveal rounds
/// (providers), finalize (settler; the settler reports every replica, the escrow checks the report against what
/// it stored and counts the quorum on chain; agreeing replicas credited up to their cap, dissenters and no-shows
/// slashed through the registry, protocol fee credited to the treasury, the rest credited to the customer),
/// cancel (customer, before assignment), expire (anyone, after deadline + grace) and claim (anyone, for itself or
/// pushed to an account). Tokens enter only through the posts and leave only through claims.
///
/// NOTE: storage is packed for gas. A task is 2 slots: slot 0 is customer + price, slot 1 the "status word"
/// (deadlines, counts, round, fee, state, laid out exactly as Solidity packs `ITaskEscrow.Task`, first member in
/// the low bits, so `getTask` reads it as a struct); the hot paths read and write the status word whole, once per
/// call. A replica is 1 slot keyed by (task, provider): the ReplicaState in the top byte, a 248-bit payload below
/// (its round while Assigned, then the low 248 bits of its commitment, then of its revealed hash, kept after
/// finalize). No replica list is stored: finalize and expire take it as calldata sorted by provider, and a list
/// that is strictly increasing, as long as `assigned`, and made only of the task's replicas is exactly the set
/// assigned. The accepted result hash is only in TaskSettled (storing it cost 22k per task, over the gas target).
/// Accounting: token.balanceOf(this) == totalLocked() + totalClaimable(), where totalLocked is what open tasks
/// owe (each exactly `escrowFor` at its post-time fee) and totalClaimable the sum of credits (tokens sent here
/// by plain `transfer` only add to the balance and are not recoverable). A batch (postTasks, finalizeMany) updates
/// the totals and the treasury's credit once; finalizeMany unlocks all its replicas in one registry call, after
/// every task's effects and events, and slashes after that. A tie for the most-revealed hash counts as no quorum;
/// every assign must leave room for a full round before the task's deadline; deadlines must fit 40 bits.
/// Gas (the target is 250k per task end to end at k = 3, batches of 100; see contracts/README.md): the loops that
/// run once per replica of a batch (adding replicas, commit, reveal, checking and judging a report) are inline
/// assembly with one fast test per entry and a Solidity slow path that re-checks a failing entry to name the
/// error; finalize tallies a batch's credits in a small memory table and writes each payee's balance once.
/// Batch entry points read their nested calldata lists without Solidity's offset checks (see `_addressesAt`).
contract TaskEscrow is ITaskEscrow, AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    bytes32 public constant MATCHER_ROLE = keccak256("MATCHER_ROLE");
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice Most replicas a task may pay for.
    uint8 public constant MAX_REPLICAS = 16;
    /// @notice Basis-point denominator.
    uint16 public constant BPS = 10_000;
    /// @notice Highest protocol fee governance may set (10%).
    uint16 public constant MAX_PROTOCOL_FEE_BPS = 1_000;
    /// @notice Longest commit window, reveal window or expiry grace governance may set.
    uint64 public constant MAX_WINDOW = 30 days;

    // Bit offsets of the status word (slot 1 of a Task). Widths: deadlines 40 bits, counts 8, fee 16, state 8.
    uint256 private constant _DEADLINE = 0;
    uint256 private constant _COMMIT_DEADLINE = 40;
    uint256 private constant _REVEAL_DEADLINE = 80;
    uint256 private constant _REPLICAS = 120;
    uint256 private constant _QUORUM = 128;
    uint256 private constant _MAX_REPLICAS = 136;
    uint256 private constant _ASSIGNED = 144;
    uint256 private constant _ROUND = 152;
    uint256 private constant _ROUND_SIZE = 160;
    uint256 private constant _ROUND_COMMITTED = 168;
    uint256 private constant _FEE_BPS = 176;
    uint256 private constant _STATE = 192;
    /// @dev The status fields an assign keeps (deadline, replicas, quorum, maxReplicas, feeBps); it rewrites the rest.
    uint256 private constant _KEPT_ON_ASSIGN = ((1 << 40) - 1) | (((1 << 24) - 1) << _REPLICAS) | (0xffff << _FEE_BPS);
    /// @dev The state byte of the status word.
    uint256 private constant _STATE_MASK = 0xff << _STATE;

    // A replica word: state in the top byte, payload in the low 248 bits.
    uint256 private constant _REPLICA_STATE = 248;
    uint256 private constant _PAYLOAD = (1 << 248) - 1;

    /// @dev Governance parameters, read together: 1 slot.
    struct Params {
        uint16 protocolFeeBps;
        uint64 commitWindow;
        uint64 revealWindow;
        uint64 expiryGrace;
        uint16 slashDissentBps;
        uint16 slashNoShowBps;
    }

    /// @dev What a finalizeMany accumulates over its tasks, settled once at the end; and the running totals of the
    /// task being finalized.
    struct Batch {
        uint256 released; // escrow of the closed tasks, moved from locked to claimable
        uint256 fees; // protocol fees, credited to the treasury
        address[] unlocks; // every replica's provider, unlocked in one registry call
        uint256 unlockCount;
        bytes32 winner; // current task: the most revealed hash
        uint256 votes; // current task: its count (0 on a tie)
        bool settled; // current task: votes >= quorum
        uint256 paid; // current task: credited to its agreeing replicas
        bool slashes; // current task: some replica is to be slashed
        uint256 credits; // memory address of the batch's credit table (see _newCreditTable)
        uint256 scratch; // memory reused by every task of the batch: the judge context, then the replica words
    }

    IERC20 private immutable _token;
    IProviderRegistry private immutable _registry;

    mapping(uint256 taskId => Task) private _tasks;
    mapping(uint256 taskId => mapping(address provider => uint256 word)) private _replicas;
    mapping(address account => uint256) private _claimable;
    Params private _params;
    address private _treasury;
    uint256 private _taskCount;
    uint128 private _totalLocked;
    uint128 private _totalClaimable;

    constructor(
        IERC20 token_,
        IProviderRegistry registry_,
        address admin,
        address treasury_,
        uint16 protocolFeeBps_,
        uint64 commitWindow_,
        uint64 revealWindow_,
        uint64 expiryGrace_,
        uint16 slashDissentBps_,
        uint16 slashNoShowBps_
    ) {
        _token = token_;
        _registry = registry_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setTreasury(treasury_);
        _setProtocolFeeBps(protocolFeeBps_);
        _setCommitWindow(commitWindow_);
        _setRevealWindow(revealWindow_);
        _setExpiryGrace(expiryGrace_);
        _setSlashDissentBps(slashDissentBps_);
        _setSlashNoShowBps(slashNoShowBps_);
    }

    // ------------------------------------------------------------------ customer

    /// @inheritdoc ITaskEscrow
    function postTask(TaskTerms calldata terms) external nonReentrant returns (uint256 taskId) {
        return _postOne(msg.sender, terms);
    }

    /// @inheritdoc ITaskEscrow
    /// @dev An empty batch posts nothing, pulls nothing and returns the id the next post will get.
    function postTasks(TaskTerms[] calldata terms) external nonReentrant returns (uint256 firstTaskId) {
        (uint256 feeBps, uint256 earliest) = _postParams();
        uint256 n = terms.length;
        firstTaskId = _taskCount + 1;
        uint256 total;
        for (uint256 i; i < n; ++i) {
            total += _record(firstTaskId + i, msg.sender, terms[i], feeBps, earliest);
        }
        _lockFunds(msg.sender, n, total);
    }

    /// @inheritdoc ITaskEscrow
    /// @dev A failing permit is ignored (someone may have front-run it); the pull then needs the allowance.
    function postTaskWithPermit(
        TaskTerms calldata terms,
        uint256 permitValue,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant returns (uint256 taskId) {
        try IERC20Permit(address(_token)).permit(msg.sender, address(this), permitValue, permitDeadline, v, r, s) {}
            catch {}
        return _postOne(msg.sender, terms);
    }

    /// @inheritdoc ITaskEscrow
    function cancelTask(uint256 taskId) external {
        _cancel(taskId, msg.sender);
    }

    // ------------------------------------------------------------------ matcher

    /// @inheritdoc ITaskEscrow
    function assign(uint256 taskId, address[] calldata providers) external onlyRole(MATCHER_ROLE) nonReentrant {
        _assign(taskId, providers, _windows(), new address[](0), 0);
        uint256 notStaked = _registry.lockForTasks(providers);
        if (notStaked != providers.length) revert EscrowProviderNotStaked(taskId, providers[notStaked]);
    }

    /// @inheritdoc ITaskEscrow
    /// @dev Every task's effects and events first, then one registry call that locks all the batch's replicas.
    function assignMany(uint256[] calldata taskIds, address[][] calldata providers)
        external
        onlyRole(MATCHER_ROLE)
        nonReentrant
    {
        uint256 n = taskIds.length;
        if (providers.length != n) revert EscrowBatchLengthMismatch(n, providers.length);
        uint256 windows = _windows();
        uint256 total;
        for (uint256 i; i < n; ++i) {
            total += _addressesAt(providers, i).length;
        }
        address[] memory all = new address[](total);
        uint256 next;
        for (uint256 i; i < n; ++i) {
            address[] calldata ps = _addressesAt(providers, i);
            _assign(taskIds[i], ps, windows, all, next);
            // unchecked: next + ps.length <= total, the sum of the lengths.
            unchecked {
                next += ps.length;
            }
        }
        uint256 notStaked = _registry.lockForTasks(all);
        if (notStaked != total) _revertNotStaked(taskIds, providers, notStaked);
    }

    /// @dev The commit window (low 64 bits) and the reveal window (next 64), read once per call.
    function _windows() private view returns (uint256) {
        Params memory p = _params;
        return uint256(p.commitWindow) | (uint256(p.revealWindow) << 64);
    }

    // ------------------------------------------------------------------ provider

    /// @inheritdoc ITaskEscrow
    function commit(uint256, bytes32) external {
        // commit(uint256 taskId, bytes32 commitment): the arguments sit at calldata 0x04 and 0x24
        _commitAll(0x04, 0x24, 1);
    }

    /// @inheritdoc ITaskEscrow
    function commitMany(uint256[] calldata taskIds, bytes32[] calldata commitments) external {
        uint256 n = taskIds.length;
        if (commitments.length != n) revert EscrowBatchLengthMismatch(n, commitments.length);
        uint256 ids;
        uint256 values;
        assembly ("memory-safe") {
            ids := taskIds.offset
            values := commitments.offset
        }
        _commitAll(ids, values, n);
    }

    /// @inheritdoc ITaskEscrow
    function reveal(uint256, bytes32, bytes32) external {
        // reveal(uint256 taskId, bytes32 resultHash, bytes32 salt): arguments at calldata 0x04, 0x24, 0x44
        _revealAll(0x04, 0x24, 0x44, 1);
    }

    /// @inheritdoc ITaskEscrow
    function revealMany(uint256[] calldata taskIds, bytes32[] calldata resultHashes, bytes32[] calldata salts)
        external
    {
        uint256 n = taskIds.length;
        if (resultHashes.length != n) revert EscrowBatchLengthMismatch(n, resultHashes.length);
        if (salts.length != n) revert EscrowBatchLengthMismatch(n, salts.length);
        uint256 ids;
        uint256 hashes;
        uint256 saltsAt;
        assembly ("memory-safe") {
            ids := taskIds.offset
            hashes := resultHashes.offset
            saltsAt := salts.offset
        }
        _revealAll(ids, hashes, saltsAt, n);
    }

    // ------------------------------------------------------------------ settler

    /// @inheritdoc ITaskEscrow
    function finalize(uint256 taskId, ReplicaReport[] calldata reports) external onlyRole(SETTLER_ROLE) nonReentrant {
        Batch memory batch = _newBatch(reports.length);
        bool slashes = _finalize(taskId, reports, batch);
        _closeBatch(batch);
        if (slashes) _slashFaulty(taskId, reports, _params);
    }

    /// @inheritdoc ITaskEscrow
    /// @dev Every task's effects and events first, then one credit to the treasury, one registry unlock for all
    /// replicas, and the slashes last.
    function finalizeMany(uint256[] calldata taskIds, ReplicaReport[][] calldata reports)
        external
        onlyRole(SETTLER_ROLE)
        nonReentrant
    {
        uint256 n = taskIds.length;
        if (reports.length != n) revert EscrowBatchLengthMismatch(n, reports.length);
        uint256 replicas;
        for (uint256 i; i < n; ++i) {
            replicas += _reportsAt(reports, i).length;
        }
        Batch memory batch = _newBatch(replicas);
        bool[] memory slashes = new bool[](n);
        bool anySlash;
        for (uint256 i; i < n; ++i) {
            if (_finalize(taskIds[i], _reportsAt(reports, i), batch)) (slashes[i], anySlash) = (true, true);
        }
        _closeBatch(batch);
        if (anySlash) {
            Params memory p = _params;
            for (uint256 i; i < n; ++i) {
                if (slashes[i]) _slashFaulty(taskIds[i], reports[i], p);
            }
        }
    }

    // ------------------------------------------------------------------ anyone

    /// @inheritdoc ITaskEscrow
    function expire(uint256 taskId, address[] calldata providers) external nonReentrant {
        _expire(taskId, providers);
    }

    /// @inheritdoc ITaskEscrow
    function claim() external nonReentrant returns (uint256 amount) {
        return _claim(msg.sender);
    }

    /// @inheritdoc ITaskEscrow
    function claimFor(address account) external nonReentrant returns (uint256 amount) {
        return _claim(account);
    }

    // ------------------------------------------------------------------ governance

    /// @inheritdoc ITaskEscrow
    function setProtocolFeeBps(uint16 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setProtocolFeeBps(value);
    }

    /// @inheritdoc ITaskEscrow
    function setCommitWindow(uint64 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setCommitWindow(value);
    }

    /// @inheritdoc ITaskEscrow
    function setRevealWindow(uint64 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setRevealWindow(value);
    }

    /// @inheritdoc ITaskEscrow
    function setExpiryGrace(uint64 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setExpiryGrace(value);
    }

    /// @inheritdoc ITaskEscrow
    function setSlashDissentBps(uint16 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setSlashDissentBps(value);
    }

    /// @inheritdoc ITaskEscrow
    function setSlashNoShowBps(uint16 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setSlashNoShowBps(value);
    }

    /// @inheritdoc ITaskEscrow
    function setTreasury(address value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setTreasury(value);
    }

    // ------------------------------------------------------------------ views

    /// @notice The payment token.
    function token() external view returns (IERC20) {
        return _token;
    }

    /// @notice The provider registry that holds stakes, locks and slashes.
    function registry() external view returns (IProviderRegistry) {
        return _registry;
    }

    /// @inheritdoc ITaskEscrow
    function getTask(uint256 taskId) external view returns (Task memory) {
        return _tasks[taskId];
    }

    /// @inheritdoc ITaskEscrow
    function replicaOf(uint256 taskId, address provider) external view returns (ReplicaState state, bytes32 payload) {
        uint256 word = _replicas[taskId][provider];
        return (ReplicaState(uint8(word >> _REPLICA_STATE)), bytes32(word & _PAYLOAD));
    }

    /// @inheritdoc ITaskEscrow
    function taskCount() external view returns (uint256) {
        return _taskCount;
    }

    /// @inheritdoc ITaskEscrow
    function escrowFor(uint8 maxReplicas, uint96 maxPricePerReplica) external view returns (uint256) {
        return _escrowed(maxReplicas, maxPricePerReplica, _params.protocolFeeBps);
    }

    /// @inheritdoc ITaskEscrow
    function totalLocked() external view returns (uint256) {
        return _totalLocked;
    }

    /// @inheritdoc ITaskEscrow
    function totalClaimable() external view returns (uint256) {
        return _totalClaimable;
    }

    /// @inheritdoc ITaskEscrow
    function claimable(address account) external view returns (uint256) {
        return _claimable[account];
    }

    /// @inheritdoc ITaskEscrow
    function commitmentFor(bytes32 resultHash, bytes32 salt, address provider) public pure returns (bytes32 c) {
        // keccak256(abi.encode(resultHash, salt, provider)), hashed in scratch memory past the free pointer.
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, resultHash)
            mstore(add(m, 0x20), salt)
            mstore(add(m, 0x40), and(provider, 0xffffffffffffffffffffffffffffffffffffffff))
            c := keccak256(m, 0x60)
        }
    }

    function protocolFeeBps() external view returns (uint16) {
        return _params.protocolFeeBps;
    }

    function commitWindow() external view returns (uint64) {
        return _params.commitWindow;
    }

    function revealWindow() external view returns (uint64) {
        return _params.revealWindow;
    }

    function expiryGrace() external view returns (uint64) {
        return _params.expiryGrace;
    }

    function slashDissentBps() external view returns (uint16) {
        return _params.slashDissentBps;
    }

    function slashNoShowBps() external view returns (uint16) {
        return _params.slashNoShowBps;
    }

    function treasury() external view returns (address) {
        return _treasury;
    }

    // ------------------------------------------------------------------ transitions

    function _postOne(address customer, TaskTerms calldata terms) private returns (uint256 taskId) {
        taskId = _taskCount + 1;
        (uint256 feeBps, uint256 earliest) = _postParams();
        uint256 escrowed = _record(taskId, customer, terms, feeBps, earliest);
        _lockFunds(customer, 1, escrowed);
    }

    /// @dev The fee rate of new posts and the earliest deadline they may have (now + both windows).
    function _postParams() private view returns (uint256 feeBps, uint256 earliest) {
        Params memory p = _params;
        return (p.protocolFeeBps, block.timestamp + p.commitWindow + p.revealWindow);
    }

    /// @dev Checks the terms and writes task `taskId` (2 fresh slots); returns what it owes. TaskPosted's data is
    /// the six words of the terms followed by `escrowed`, so it is emitted by copying the checked calldata.
    function _record(uint256 taskId, address customer, TaskTerms calldata terms, uint256 feeBps, uint256 earliest)
        private
        returns (uint256 escrowed)
    {
        uint256 status = _checkTerms(terms, earliest) | (feeBps << _FEE_BPS)
            | (uint256(uint8(TaskState.Posted)) << _STATE);
        uint256 price = terms.maxPricePerReplica;
        escrowed = _escrowed(uint8(status >> _MAX_REPLICAS), uint96(price), uint16(feeBps));
        bytes32 topic = TaskPosted.selector;
        _writeTask(_tasks[taskId], uint256(uint160(customer)) | (price << 160), status);
        assembly ("memory-safe") {
            let data := mload(0x40)
            calldatacopy(data, terms, 0xc0)
            mstore(add(data, 0xc0), escrowed)
            log3(data, 0xe0, topic, taskId, and(customer, 0xffffffffffffffffffffffffffffffffffffffff))
        }
    }

    /// @dev Reverts on terms that make no sense (which includes every word out of its ABI type's range: the
    /// replica counts are <= 16, the price < 2^96, the deadline < 2^40); returns the status word's deadline and
    /// replica counts.
    function _checkTerms(TaskTerms calldata terms, uint256 earliest) private pure returns (uint256 status) {
        uint256 specHash;
        uint256 replicas;
        uint256 quorum;
        uint256 maxReplicas;
        uint256 price;
        uint256 deadline;
        assembly ("memory-safe") {
            specHash := calldataload(terms)
            replicas := calldataload(add(terms, 0x20))
            quorum := calldataload(add(terms, 0x40))
            maxReplicas := calldataload(add(terms, 0x60))
            price := calldataload(add(terms, 0x80))
            deadline := calldataload(add(terms, 0xa0))
        }
        if (specHash == 0) revert EscrowZeroSpecHash();
        if (quorum == 0 || quorum > replicas || replicas > maxReplicas || maxReplicas > MAX_REPLICAS) {
            revert EscrowInvalidReplication(uint8(replicas), uint8(quorum), uint8(maxReplicas));
        }
        if (price == 0) revert EscrowZeroPrice();
        if (price > type(uint96).max) revert EscrowParameterOutOfRange("maxPricePerReplica", price);
        if (deadline <= earliest) revert EscrowDeadlineTooSoon(uint64(deadline), uint64(earliest));
        if (deadline > type(uint40).max) revert EscrowParameterOutOfRange("deadline", deadline);
        return deadline | (replicas << _REPLICAS) | (quorum << _QUORUM) | (maxReplicas << _MAX_REPLICAS);
    }

    /// @dev Counts `count` new tasks and their `total` escrow as locked, then pulls it from `customer`.
    function _lockFunds(address customer, uint256 count, uint256 total) private {
        // unchecked: the count is bounded by calldata size, far below 2^255.
        unchecked {
            _taskCount += count;
        }
        // Each task owes < 2^101 (16 * 2^96 * 1.1) and a batch has far fewer than 2^27 tasks, so total < 2^128 and
        // the cast is exact; the checked add reverts if the sum would overflow.
        _totalLocked += uint128(total);
        if (total != 0) _token.safeTransferFrom(customer, address(this), total);
    }

    function _cancel(uint256 taskId, address caller) private {
        Task storage t = _tasks[taskId];
        uint256 status = _status(t);
        TaskState state = TaskState(uint8(status >> _STATE));
        if (state == TaskState.None) revert EscrowTaskNotFound(taskId);
        (address customer, uint96 price) = _head(t);
        if (caller != customer) revert EscrowNotCustomer(taskId, caller);
        if (state != TaskState.Posted) revert EscrowTaskNotInState(taskId, state);
        uint256 refund = _escrowed(uint8(status >> _MAX_REPLICAS), price, uint16(status >> _FEE_BPS));
        _setStatus(t, _withState(status, TaskState.Cancelled));
        _credit(customer, refund);
        _release(refund);
        emit TaskCancelled(taskId, refund);
    }

    /// @dev Opens a round on the task with `providers` (copied into `all` from `from` for the batch's registry lock).
    function _assign(
        uint256 taskId,
        address[] calldata providers,
        uint256 windows,
        address[] memory all,
        uint256 from
    ) private {
        Task storage t = _tasks[taskId];
        uint256 status = _status(t);
        uint256 count = providers.length;
        _checkAssign(taskId, status, count);
        // windows: commit window in the low 64 bits, reveal window above (each <= MAX_WINDOW)
        uint256 commitDeadline = block.timestamp + uint64(windows);
        uint256 revealDeadline = commitDeadline + (windows >> 64);
        uint256 deadline = uint40(status);
        if (deadline <= revealDeadline) revert EscrowDeadlineTooSoon(uint64(deadline), uint64(revealDeadline));

        // Every assign adds at least one replica and at most maxReplicas <= 16 are ever assigned, so the round
        // and `assigned` (checked against replicas or maxReplicas) fit 8 bits.
        uint256 round = uint8(status >> _ROUND) + 1;
        uint256 assigned = uint8(status >> _ASSIGNED) + count;
        _addReplicas(taskId, providers, round, all, from);
        // revealDeadline < deadline < 2^40 (checked at post), so both deadlines fit their 40 bits.
        status = (status & _KEPT_ON_ASSIGN) | (commitDeadline << _COMMIT_DEADLINE)
            | (revealDeadline << _REVEAL_DEADLINE) | (assigned << _ASSIGNED) | (round << _ROUND)
            | (count << _ROUND_SIZE) | (uint256(uint8(TaskState.Assigned)) << _STATE);
        _setStatus(t, status);
        // RoundOpened(taskId, assigned, commitDeadline, revealDeadline): assigned <= 16, deadlines < 2^40
        bytes32 topic = RoundOpened.selector;
        assembly ("memory-safe") {
            let data := mload(0x40)
            mstore(data, assigned)
            mstore(add(data, 0x20), commitDeadline)
            mstore(add(data, 0x40), revealDeadline)
            log2(data, 0x60, topic, taskId)
        }
    }

    /// @dev Reverts EscrowProviderNotStaked for entry `index` of the flattened provider lists of an assignMany.
    function _revertNotStaked(uint256[] calldata taskIds, address[][] calldata providers, uint256 index)
        private
        pure
    {
        for (uint256 i;; ++i) {
            uint256 count = providers[i].length;
            if (index < count) revert EscrowProviderNotStaked(taskIds[i], providers[i][index]);
            index -= count;
        }
    }

    /// @dev A Posted task takes exactly `replicas` providers; an Assigned one at least one more, up to maxReplicas.
    function _checkAssign(uint256 taskId, uint256 status, uint256 count) private pure {
        uint256 state = uint8(status >> _STATE);
        if (state == uint8(TaskState.Posted)) {
            uint8 replicas = uint8(status >> _REPLICAS);
            if (count != replicas) revert EscrowWrongReplicaCount(taskId, count, replicas);
        } else if (state == uint8(TaskState.Assigned)) {
            if (count == 0) revert EscrowWrongReplicaCount(taskId, count, uint8(status >> _REPLICAS));
            uint256 assigned = uint8(status >> _ASSIGNED);
            uint8 maxReplicas = uint8(status >> _MAX_REPLICAS);
            if (assigned + count > maxReplicas) revert EscrowTooManyReplicas(taskId, assigned, count, maxReplicas);
        } else {
            _revertState(taskId, status);
        }
    }

    /// @dev Writes a fresh Assigned replica (payload: its round) per provider, emitting TaskAssigned, and copies
    /// the providers into `all` from index `from` (when `all` is not empty); reverts on one already there. The loop
    /// is assembly: it runs once per replica of every batch and Solidity's version costs ~2x more per entry.
    /// Provider words are read as addresses (high bits ignored), as the registry's lockForTasks reads them.
    function _addReplicas(
        uint256 taskId,
        address[] calldata providers,
        uint256 round,
        address[] memory all,
        uint256 from
    ) private {
        uint256 word = (uint256(uint8(ReplicaState.Assigned)) << _REPLICA_STATE) | round;
        bytes32 topic = TaskAssigned.selector;
        uint256 duplicate = providers.length;
        assembly ("memory-safe") {
            mstore(0, taskId)
            mstore(0x20, _replicas.slot)
            let base := keccak256(0, 0x40)
            let copy := mload(all)
            let out := add(add(all, 0x20), shl(5, from))
            for { let i := 0 } lt(i, providers.length) { i := add(i, 1) } {
                let provider :=
                    and(calldataload(add(providers.offset, shl(5, i))), 0xffffffffffffffffffffffffffffffffffffffff)
                mstore(0, provider)
                mstore(0x20, base)
                let slot := keccak256(0, 0x40)
                if sload(slot) {
                    duplicate := i
                    break
                }
                sstore(slot, word)
                log3(0, 0, topic, taskId, provider)
                if copy { mstore(add(out, shl(5, i)), provider) }
            }
        }
        if (duplicate != providers.length) revert EscrowDuplicateProvider(taskId, providers[duplicate]);
    }

    /// @dev Commits msg.sender's replica of each of `n` tasks: task ids are the calldata words from `ids`, the
    /// commitments those from `values` (the caller checked both lists hold `n` words). The loop is assembly (it
    /// runs once per replica of every batch): per entry one test for the usual case (task Assigned; replica
    /// Assigned in the current round; commit window open), then the replica word (state Committed, the
    /// commitment's low 248 bits), roundCommitted + 1, ResultCommitted. An entry failing the test stops the loop
    /// and `_revertCommit` names what failed.
    function _commitAll(uint256 ids, uint256 values, uint256 n) private {
        uint256 bad;
        uint256 tasksSlot;
        uint256 replicasSlot;
        bytes32 topic = ResultCommitted.selector;
        assembly ("memory-safe") {
            tasksSlot := _tasks.slot
            replicasSlot := _replicas.slot
        }
        assembly ("memory-safe") {
            function commitEach(ids_, values_, n_, tasks, replicas, topic_) -> bad_ {
                bad_ := n_
                for { let i := 0 } lt(i, n_) { i := add(i, 1) } {
                    let taskId := calldataload(add(ids_, shl(5, i)))
                    mstore(0, taskId)
                    mstore(0x20, tasks)
                    let statusSlot := add(keccak256(0, 0x40), 1)
                    mstore(0x20, replicas)
                    mstore(0x20, keccak256(0, 0x40))
                    mstore(0, caller())
                    let replicaSlot := keccak256(0, 0x40)
                    let status := sload(statusSlot)
                    let word := sload(replicaSlot)
                    // task state (bits 192-199) Assigned = 2, replica state Assigned = 1, replica round (low byte)
                    // == task round (bits 152-159), now <= commitDeadline (bits 40-79)
                    if iszero(
                        and(
                            and(eq(shr(192, status), 2), eq(shr(248, word), 1)),
                            and(
                                eq(and(word, 0xff), and(shr(152, status), 0xff)),
                                iszero(gt(timestamp(), and(shr(40, status), 0xffffffffff)))
                            )
                        )
                    ) {
                        bad_ := i
                        break
                    }
                    let commitment := calldataload(add(values_, shl(5, i)))
                    // state Committed = 2 in the top byte, the commitment's low 248 bits below
                    sstore(replicaSlot, or(shl(248, 2), shr(8, shl(8, commitment))))
                    // roundCommitted (bits 168-175) + 1: only the current round's replicas commit, each once, so
                    // it stays <= roundSize <= 16 and never carries into the next field
                    sstore(statusSlot, add(status, shl(168, 1)))
                    mstore(0, commitment)
                    log3(0, 0x20, topic_, taskId, caller())
                }
            }
            bad := commitEach(ids, values, n, tasksSlot, replicasSlot, topic)
        }
        if (bad != n) {
            uint256 taskId;
            assembly ("memory-safe") {
                taskId := calldataload(add(ids, shl(5, bad)))
            }
            (uint256 statusSlot, uint256 replicaSlot) = _slots(taskId, msg.sender);
            _revertCommit(taskId, msg.sender, _load(statusSlot), _load(replicaSlot));
        }
    }

    /// @dev The error of a failed commit, checks in order: task state, replica, its state, its round, the window.
    function _revertCommit(uint256 taskId, address provider, uint256 status, uint256 word) private view {
        if (status >> _STATE != uint8(TaskState.Assigned)) _revertState(taskId, status);
        if (word == 0) revert EscrowNotAssigned(taskId, provider);
        ReplicaState rs = ReplicaState(uint8(word >> _REPLICA_STATE));
        if (rs != ReplicaState.Assigned) revert EscrowReplicaNotInState(taskId, provider, rs);
        uint8 round = uint8(status >> _ROUND);
        if (uint8(word) != round) revert EscrowRoundClosed(taskId, provider, uint8(word), round);
        revert EscrowCommitWindowClosed(taskId, uint40(status >> _COMMIT_DEADLINE), uint64(block.timestamp));
    }

    /// @dev Reveals msg.sender's replica of each of `n` tasks (ids, result hashes and salts are the calldata words
    /// from `ids`, `hashes`, `salts`; the caller checked the lengths). Assembly like `_commitAll`: per entry one
    /// test (task Assigned; replica Committed; reveals open: every current-round replica committed or the commit
    /// window closed; reveal window open; keccak256(abi.encode(resultHash, salt, sender)) matches the stored 248
    /// bits), then the replica word (state Revealed, the hash's low 248 bits) and ResultRevealed. An entry failing
    /// it stops the loop and `_revertReveal` names what failed.
    function _revealAll(uint256 ids, uint256 hashes, uint256 salts, uint256 n) private {
        uint256 bad;
        uint256 tasksSlot;
        uint256 replicasSlot;
        bytes32 topic = ResultRevealed.selector;
        assembly ("memory-safe") {
            tasksSlot := _tasks.slot
            replicasSlot := _replicas.slot
        }
        assembly ("memory-safe") {
            function revealEach(ids_, hashes_, salts_, n_, tasks, replicas, topic_) -> bad_ {
                bad_ := n_
                let scratch := mload(0x40)
                for { let i := 0 } lt(i, n_) { i := add(i, 1) } {
                    let taskId := calldataload(add(ids_, shl(5, i)))
                    mstore(0, taskId)
                    mstore(0x20, tasks)
                    let status := sload(add(keccak256(0, 0x40), 1))
                    mstore(0x20, replicas)
                    mstore(0x20, keccak256(0, 0x40))
                    mstore(0, caller())
                    let replicaSlot := keccak256(0, 0x40)
                    let word := sload(replicaSlot)
                    let resultHash := calldataload(add(hashes_, shl(5, i)))
                    mstore(scratch, resultHash)
                    mstore(add(scratch, 0x20), calldataload(add(salts_, shl(5, i))))
                    mstore(add(scratch, 0x40), caller())
                    // task Assigned = 2; replica Committed = 2; roundCommitted (bits 168-175) == roundSize
                    // (160-167) or now > commitDeadline (40-79); now <= revealDeadline (80-119); commitment matches
                    if iszero(
                        and(
                            and(
                                and(eq(shr(192, status), 2), eq(shr(248, word), 2)),
                                or(
                                    eq(and(shr(168, status), 0xff), and(shr(160, status), 0xff)),
                                    gt(timestamp(), and(shr(40, status), 0xffffffffff))
                                )
                            ),
                            and(
                                iszero(gt(timestamp(), and(shr(80, status), 0xffffffffff))),
                                eq(shr(8, shl(8, keccak256(scratch, 0x60))), shr(8, shl(8, word)))
                            )
                        )
                    ) {
                        bad_ := i
                        break
                    }
                    // state Revealed = 3 in the top byte, the hash's low 248 bits below
                    sstore(replicaSlot, or(shl(248, 3), shr(8, shl(8, resultHash))))
                    mstore(0, resultHash)
                    log3(0, 0x20, topic_, taskId, caller())
                }
            }
            bad := revealEach(ids, hashes, salts, n, tasksSlot, replicasSlot, topic)
        }
        if (bad != n) {
            uint256 taskId;
            bytes32 resultHash;
            bytes32 salt;
            assembly ("memory-safe") {
                taskId := calldataload(add(ids, shl(5, bad)))
                resultHash := calldataload(add(hashes, shl(5, bad)))
                salt := calldataload(add(salts, shl(5, bad)))
            }
            _revertReveal(taskId, msg.sender, resultHash, salt);
        }
    }

    /// @dev The error of a failed reveal, checks in order: task state, replica, its state, reveals open, window,
    /// commitment.
    function _revertReveal(uint256 taskId, address provider, bytes32 resultHash, bytes32 salt) private view {
        (uint256 statusSlot, uint256 replicaSlot) = _slots(taskId, provider);
        uint256 status = _load(statusSlot);
        uint256 word = _load(replicaSlot);
        if (status >> _STATE != uint8(TaskState.Assigned)) _revertState(taskId, status);
        if (word == 0) revert EscrowNotAssigned(taskId, provider);
        ReplicaState rs = ReplicaState(uint8(word >> _REPLICA_STATE));
        if (rs != ReplicaState.Committed) revert EscrowReplicaNotInState(taskId, provider, rs);
        uint40 commitDeadline = uint40(status >> _COMMIT_DEADLINE);
        if (uint8(status >> _ROUND_COMMITTED) != uint8(status >> _ROUND_SIZE) && block.timestamp <= commitDeadline) {
            revert EscrowRevealNotOpen(taskId, commitDeadline, uint64(block.timestamp));
        }
        if (block.timestamp > uint40(status >> _REVEAL_DEADLINE)) {
            revert EscrowRevealWindowClosed(taskId, uint40(status >> _REVEAL_DEADLINE), uint64(block.timestamp));
        }
        _revertMismatch(taskId, provider, word, uint256(commitmentFor(resultHash, salt, provider)));
    }

    function _revertMismatch(uint256 taskId, address provider, uint256 word, uint256 computed) private pure {
        revert EscrowRevealMismatch(taskId, provider, bytes32(word & _PAYLOAD), bytes32(computed & _PAYLOAD));
    }

    /// @dev Checks the report against storage, counts the quorum, and records the outcome: replica outcomes,
    /// payments and the customer's refund credited, the task Settled or Failed, events emitted. Adds the task's
    /// escrow, fee and providers to `batch`; returns whether a replica is to be slashed (done by the caller).
    function _finalize(uint256 taskId, ReplicaReport[] calldata reports, Batch memory batch)
        private
        returns (bool slashes)
    {
        uint256 statusSlot = _statusSlot(taskId);
        uint256 status = _load(statusSlot);
        if (status >> _STATE != uint8(TaskState.Assigned)) _revertState(taskId, status);
        if (reports.length != uint8(status >> _ASSIGNED)) {
            revert EscrowReportLength(taskId, reports.length, uint8(status >> _ASSIGNED));
        }
        // A current-round replica may still commit: wait for the commit window (or the reveal deadline).
        if (
            block.timestamp <= uint40(status >> _REVEAL_DEADLINE)
                && uint8(status >> _ROUND_COMMITTED) != uint8(status >> _ROUND_SIZE)
                && block.timestamp <= uint40(status >> _COMMIT_DEADLINE)
        ) _revertRevealsPending(taskId, status);
        uint256[] memory words = _checkReport(taskId, reports, status, batch);
        batch.settled = batch.votes >= uint8(status >> _QUORUM);
        batch.paid = 0;
        batch.slashes = false;
        uint256 head = _load(statusSlot - 1);
        _judge(taskId, reports, words, head >> 160, batch);
        _close(taskId, statusSlot, status, head, batch);
        return batch.slashes;
    }

    /// @dev Reads the replica word of every reported provider, checking the report is sorted (so distinct), holds
    /// only replicas of the task, reports revealed hashes as stored, and leaves no commitment to reveal before the
    /// reveal deadline. Counts the quorum into `batch`: `winner` is the revealed hash with the most votes, `votes`
    /// its count (0 on a tie for the most); one pass when every revealed hash is the same, the usual case. The loop
    /// is assembly (it runs once per replica of every batch); on a bad entry `_revertReport` names the error.
    function _checkReport(uint256 taskId, ReplicaReport[] calldata reports, uint256 status, Batch memory batch)
        private
        view
        returns (uint256[] memory words)
    {
        // the batch's scratch holds the judge context (10 words), then room for a list of up to 16 words
        uint256 scratch = batch.scratch;
        assembly ("memory-safe") {
            words := add(scratch, 0x140)
            mstore(words, reports.length)
        }
        uint256 bad;
        bytes32 winner;
        uint256 votes;
        uint256 flags; // 1: two revealed hashes differ, 2: a replica committed but did not reveal
        uint256 base = _replicaBase(taskId);
        assembly ("memory-safe") {
            function scan(entries, n, base_, out) -> bad_, winner_, votes_, flags_ {
                bad_ := n
                let previous := 0
                for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                    let entry := add(entries, mul(i, 0x60))
                    let provider := calldataload(entry)
                    // strictly increasing (so distinct) and an address
                    if or(iszero(gt(provider, previous)), shr(160, provider)) {
                        bad_ := i
                        break
                    }
                    previous := provider
                    mstore(0, provider)
                    mstore(0x20, base_)
                    let word := sload(keccak256(0, 0x40))
                    // no replica of this task
                    if iszero(word) {
                        bad_ := i
                        break
                    }
                    mstore(add(out, shl(5, i)), word)
                    switch shr(248, word)
                    case 3 {
                        // Revealed: the reported hash must match the stored 248 bits
                        let reported := calldataload(add(entry, 0x20))
                        if iszero(eq(shr(8, shl(8, reported)), shr(8, shl(8, word)))) {
                            bad_ := i
                            break
                        }
                        switch votes_
                        case 0 { winner_ := reported }
                        default { if iszero(eq(reported, winner_)) { flags_ := or(flags_, 1) } }
                        votes_ := add(votes_, 1)
                    }
                    case 2 { flags_ := or(flags_, 2) }
                }
            }
            bad, winner, votes, flags := scan(reports.offset, reports.length, base, add(words, 0x20))
        }
        if (bad != reports.length) _revertReport(taskId, reports, bad, base);
        if (flags & 2 != 0 && block.timestamp <= uint40(status >> _REVEAL_DEADLINE)) {
            _revertRevealsPending(taskId, status);
        }
        if (flags & 1 != 0) (winner, votes) = _plurality(reports, words);
        (batch.winner, batch.votes) = (winner, votes);
    }

    /// @dev The error for entry `i` of a report that `_checkReport` refused.
    function _revertReport(uint256 taskId, ReplicaReport[] calldata reports, uint256 i, uint256 base) private view {
        (uint256 provider, bytes32 reported,) = _reportAt(reports, i);
        uint256 previous;
        if (i != 0) (previous,,) = _reportAt(reports, i - 1);
        if (provider <= previous || provider > type(uint160).max) {
            revert EscrowReportUnsorted(taskId, address(uint160(provider)));
        }
        if (_load(_slotIn(base, provider)) == 0) revert EscrowNotAssigned(taskId, address(uint160(provider)));
        revert EscrowReportHashMismatch(taskId, address(uint160(provider)), reported);
    }

    /// @dev Each replica's outcome from its state and the tally, in assembly (it runs once per replica of every
    /// batch): the payment checked (a bad one stops the loop and `_revertPayment` names it) and credited, the
    /// state byte stored, the provider queued for the batch's unlock, ReplicaFinalized emitted. Sets the task's
    /// `batch.paid` and `batch.slashes`. Outcome codes: 4 Agreed, 5 Dissented, 6 NoShow, 7 Released.
    function _judge(
        uint256 taskId,
        ReplicaReport[] calldata reports,
        uint256[] memory words,
        uint256 cap,
        Batch memory batch
    ) private {
        uint256 bad;
        uint256 paid;
        uint256 slashes;
        {
            uint256 context = _judgeContext(taskId, cap, batch);
            assembly ("memory-safe") {
                // the credit table; see _tallyCredit
                // the table's last word (0x400) holds the `_claimable` slot; see _newCreditTable
                function tally(table, account, amount) {
                    let tagged := or(account, shl(160, 1))
                    let entry := add(table, shl(6, and(account, 0xf)))
                    let held := mload(entry)
                    if iszero(eq(held, tagged)) {
                        if held { flushEntry(entry, held, mload(add(table, 0x400))) }
                        mstore(entry, tagged)
                        mstore(add(entry, 0x20), 0)
                    }
                    mstore(add(entry, 0x20), add(mload(add(entry, 0x20)), amount))
                }
                function flushEntry(entry, held, claimableSlot) {
                    mstore(0, and(held, 0xffffffffffffffffffffffffffffffffffffffff))
                    mstore(0x20, claimableSlot)
                    let slot := keccak256(0, 0x40)
                    sstore(slot, add(sload(slot), mload(add(entry, 0x20))))
                }
                // ctx: taskId, replica mapping slot, unlock entries, topic, credit table, winner, settled, cap,
                // then the task's running paid (0x100) and slashes flag (0x120)
                function judgeOne(entry, word, ctx, i) -> bad_ {
                    let provider := calldataload(entry)
                    let amount := calldataload(add(entry, 0x40))
                    let outcome := 6
                    if eq(shr(248, word), 3) {
                        outcome := 7
                        if mload(add(ctx, 0xc0)) {
                            outcome := 5
                            if eq(calldataload(add(entry, 0x20)), mload(add(ctx, 0xa0))) { outcome := 4 }
                        }
                    }
                    switch outcome
                    case 4 {
                        if gt(amount, mload(add(ctx, 0xe0))) { bad_ := 1 }
                        if and(iszero(bad_), gt(amount, 0)) {
                            tally(mload(add(ctx, 0x80)), provider, amount)
                            // at most 16 payments, each <= cap < 2^96
                            mstore(add(ctx, 0x100), add(mload(add(ctx, 0x100)), amount))
                        }
                    }
                    default {
                        if amount { bad_ := 1 }
                        if iszero(eq(outcome, 7)) { mstore(add(ctx, 0x120), 1) }
                    }
                    if iszero(bad_) {
                        mstore(0, provider)
                        mstore(0x20, mload(add(ctx, 0x20)))
                        sstore(keccak256(0, 0x40), or(shl(248, outcome), shr(8, shl(8, word))))
                        mstore(add(mload(add(ctx, 0x40)), shl(5, i)), provider)
                        mstore(0, outcome)
                        mstore(0x20, amount)
                        log3(0, 0x40, mload(add(ctx, 0x60)), mload(ctx), provider)
                    }
                }
                function judge(entries, n, ins, ctx) -> bad_ {
                    bad_ := n
                    for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                        if judgeOne(add(entries, mul(i, 0x60)), mload(add(ins, shl(5, i))), ctx, i) {
                            bad_ := i
                            break
                        }
                    }
                }
                bad := judge(reports.offset, reports.length, add(words, 0x20), context)
                paid := mload(add(context, 0x100))
                slashes := mload(add(context, 0x120))
            }
        }
        if (bad != reports.length) _revertPayment(taskId, reports, bad, cap, batch);
        // unlockCount + n <= unlocks.length: the caller sized the list as the sum of the report lengths.
        batch.unlockCount += reports.length;
        batch.paid = paid;
        batch.slashes = slashes != 0;
    }

    /// @dev What the judge loop reads from memory: task id, replica mapping slot, where this task's unlock entries
    /// go, the ReplicaFinalized topic, the batch's credit table (`batch.credits`, the 10th field), the winner,
    /// whether settled, the cap.
    function _judgeContext(uint256 taskId, uint256 cap, Batch memory batch) private pure returns (uint256 context) {
        uint256 base = _replicaBase(taskId);
        address[] memory unlocks = batch.unlocks;
        uint256 unlockCount = batch.unlockCount;
        bytes32 topic = ReplicaFinalized.selector;
        bytes32 winner = batch.winner;
        bool settled = batch.settled;
        uint256 scratch = batch.scratch;
        assembly ("memory-safe") {
            context := scratch
            mstore(add(context, 0x100), 0)
            mstore(add(context, 0x120), 0)
            mstore(add(context, 0xa0), winner)
            mstore(add(context, 0xc0), settled)
            mstore(add(context, 0xe0), cap)
            mstore(context, taskId)
            mstore(add(context, 0x20), base)
            mstore(add(context, 0x40), add(add(unlocks, 0x20), shl(5, unlockCount)))
            mstore(add(context, 0x60), topic)
            mstore(add(context, 0x80), mload(add(batch, 0x120)))
        }
    }

    /// @dev The error for entry `i` whose payment `_judge` refused.
    function _revertPayment(
        uint256 taskId,
        ReplicaReport[] calldata reports,
        uint256 i,
        uint256 cap,
        Batch memory batch
    ) private pure {
        (uint256 provider, bytes32 reported, uint256 amount) = _reportAt(reports, i);
        if (batch.settled && reported == batch.winner) {
            revert EscrowPaymentAboveCap(taskId, address(uint160(provider)), amount, cap);
        }
        revert EscrowPaymentToNonAgreeing(taskId, address(uint160(provider)), amount);
    }

    /// @dev The task's side of a finalize: the fee on what was paid, the refund credited to the customer, the
    /// state Settled or Failed, TaskSettled or TaskFailed.
    function _close(
        uint256 taskId,
        uint256 statusSlot,
        uint256 status,
        uint256 head,
        Batch memory batch
    ) private {
        bool settled = batch.settled;
        uint16 feeBps = uint16(status >> _FEE_BPS);
        uint256 paid = batch.paid;
        uint256 escrowed = _escrowed(uint8(status >> _MAX_REPLICAS), uint96(head >> 160), feeBps);
        uint256 fee = settled ? paid * feeBps / BPS : 0;
        // paid <= assigned * cap <= maxReplicas * cap, so paid + fee(paid) <= escrowed and this cannot underflow.
        uint256 refund = escrowed - paid - fee;
        _store(statusSlot, _withState(status, settled ? TaskState.Settled : TaskState.Failed));
        _tallyCredit(batch.credits, address(uint160(head)), refund);
        batch.released += escrowed;
        batch.fees += fee;
        if (settled) {
            // TaskSettled(taskId, resultHash, agreeing, paid, fee, refund); votes <= assigned <= 16 fits uint8
            bytes32 topic = TaskSettled.selector;
            bytes32 winner = batch.winner;
            uint256 votes = batch.votes;
            assembly ("memory-safe") {
                let data := mload(0x40)
                mstore(data, winner)
                mstore(add(data, 0x20), votes)
                mstore(add(data, 0x40), paid)
                mstore(add(data, 0x60), fee)
                mstore(add(data, 0x80), refund)
                log2(data, 0xa0, topic, taskId)
            }
        } else {
            emit TaskFailed(taskId, refund);
        }
    }

    /// @dev Entry `i` of a report (i < reports.length, which the ABI decoder checked fits the calldata), read
    /// without Solidity's per-field validation: the provider is range-checked by `_checkReport`, the amount by
    /// the cap (or must be 0).
    function _reportAt(ReplicaReport[] calldata reports, uint256 i)
        private
        pure
        returns (uint256 provider, bytes32 resultHash, uint256 payment)
    {
        assembly ("memory-safe") {
            let entry := add(reports.offset, mul(i, 0x60))
            provider := calldataload(entry)
            resultHash := calldataload(add(entry, 0x20))
            payment := calldataload(add(entry, 0x40))
        }
    }

    /// @dev The credits of a finalize batch: escrow moved from locked to claimable, the fees to the treasury;
    /// then the one registry call that unlocks every replica.
    function _closeBatch(Batch memory batch) private {
        _tallyCredit(batch.credits, _treasury, batch.fees);
        _flushCredits(batch.credits);
        _release(batch.released);
        address[] memory unlocks = batch.unlocks;
        if (unlocks.length != 0) _registry.unlockForTasks(unlocks);
    }

    /// @dev Slashes the task's dissenters and no-shows (outcomes as finalize stored them).
    function _slashFaulty(uint256 taskId, ReplicaReport[] calldata reports, Params memory p) private {
        mapping(address => uint256) storage replicas_ = _replicas[taskId];
        uint256 n = reports.length;
        for (uint256 i; i < n; ++i) {
            address provider = reports[i].provider;
            uint256 outcome = replicas_[provider] >> _REPLICA_STATE;
            uint16 bps;
            if (outcome == uint8(ReplicaState.Dissented)) bps = p.slashDissentBps;
            else if (outcome == uint8(ReplicaState.NoShow)) bps = p.slashNoShowBps;
            if (bps != 0) _registry.slash(provider, taskId, bps);
        }
    }

    function _expire(uint256 taskId, address[] calldata providers) private {
        Task storage t = _tasks[taskId];
        uint256 status = _status(t);
        uint256 state = uint8(status >> _STATE);
        if (state != uint8(TaskState.Posted) && state != uint8(TaskState.Assigned)) _revertState(taskId, status);
        uint256 expiresAt = uint256(uint40(status)) + _params.expiryGrace;
        if (block.timestamp < expiresAt) {
            revert EscrowNotExpired(taskId, uint64(expiresAt), uint64(block.timestamp));
        }
        uint256 n = providers.length;
        uint256 assigned = uint8(status >> _ASSIGNED);
        if (n != assigned) revert EscrowReportLength(taskId, n, assigned);
        mapping(address => uint256) storage replicas_ = _replicas[taskId];
        address previous;
        for (uint256 i; i < n; ++i) {
            address provider = providers[i];
            if (provider <= previous) revert EscrowReportUnsorted(taskId, provider);
            previous = provider;
            uint256 word = replicas_[provider];
            if (word == 0) revert EscrowNotAssigned(taskId, provider);
            replicas_[provider] = (uint256(uint8(ReplicaState.Released)) << _REPLICA_STATE) | (word & _PAYLOAD);
            emit ReplicaFinalized(taskId, provider, ReplicaState.Released, 0);
        }
        (address customer, uint96 price) = _head(t);
        uint256 refund = _escrowed(uint8(status >> _MAX_REPLICAS), price, uint16(status >> _FEE_BPS));
        _setStatus(t, _withState(status, TaskState.Expired));
        _credit(customer, refund);
        _release(refund);
        emit TaskExpired(taskId, refund);
        if (n != 0) _registry.unlockForTasks(providers);
    }

    function _claim(address account) private returns (uint256 amount) {
        amount = _claimable[account];
        if (amount == 0) revert EscrowNothingToClaim(account);
        _claimable[account] = 0;
        // amount is one account's credits, part of _totalClaimable (their sum), so < 2^128 and no underflow.
        _totalClaimable -= uint128(amount);
        emit Claimed(account, amount);
        _token.safeTransfer(account, amount);
    }

    // ------------------------------------------------------------------ helpers

    /// @dev What a task with these terms owes in total: the replicas' caps plus the fee on them.
    function _escrowed(uint8 maxReplicas, uint96 maxPricePerReplica, uint16 feeBps) private pure returns (uint256) {
        // unchecked: base < 2^8 * 2^96 and base * feeBps < 2^120, far below 2^256
        unchecked {
            uint256 base = uint256(maxReplicas) * maxPricePerReplica;
            return base + base * feeBps / BPS;
        }
    }

    /// @dev Moves `amount` of closed tasks' escrow from locked to claimable (it has been credited to accounts).
    function _release(uint256 amount) private {
        // amount is what closed tasks owed, part of _totalLocked, so < 2^128 and the subtraction cannot underflow;
        // the add is checked.
        _totalLocked -= uint128(amount);
        _totalClaimable += uint128(amount);
    }

    /// @dev A batch's credit table: 16 entries of (account tagged with bit 160, amount) in memory, an account in
    /// entry `account & 15`. A finalize batch credits the same few payees (providers, customer, treasury) again and
    /// again; tallying in memory and writing each payee's `_claimable` once (`_flushCredits`, or when another
    /// account takes its entry) saves a storage read and write per credit. The judge loop in `_judge` inlines the
    /// same logic and finds `_claimable`'s slot in the word after the table.
    function _newCreditTable() private pure returns (uint256 table) {
        assembly ("memory-safe") {
            table := mload(0x40)
            calldatacopy(table, calldatasize(), 0x400)
            mstore(add(table, 0x400), _claimable.slot)
            mstore(0x40, add(table, 0x420))
        }
    }

    /// @dev An empty finalize batch for `replicas` replicas in all.
    function _newBatch(uint256 replicas) private pure returns (Batch memory) {
        return Batch(0, 0, new address[](replicas), 0, 0, 0, false, 0, false, _newCreditTable(), _newScratch());
    }

    /// @dev A finalize batch's scratch memory (see Batch.scratch): 10 context words and a 17-word list.
    function _newScratch() private pure returns (uint256 scratch) {
        assembly ("memory-safe") {
            scratch := mload(0x40)
            mstore(0x40, add(scratch, 0x360))
        }
    }

    /// @dev Adds `amount` to `account`'s entry of the credit table (flushing the entry's previous account).
    function _tallyCredit(uint256 table, address account, uint256 amount) private {
        if (amount == 0) return;
        assembly ("memory-safe") {
            account := and(account, 0xffffffffffffffffffffffffffffffffffffffff)
            let tagged := or(account, shl(160, 1))
            let entry := add(table, shl(6, and(account, 0xf)))
            let held := mload(entry)
            if iszero(eq(held, tagged)) {
                if held {
                    mstore(0, and(held, 0xffffffffffffffffffffffffffffffffffffffff))
                    mstore(0x20, _claimable.slot)
                    let slot := keccak256(0, 0x40)
                    sstore(slot, add(sload(slot), mload(add(entry, 0x20))))
                }
                mstore(entry, tagged)
                mstore(add(entry, 0x20), 0)
            }
            mstore(add(entry, 0x20), add(mload(add(entry, 0x20)), amount))
        }
    }

    /// @dev Writes every entry of the credit table to `_claimable`. Credits are backed by tokens this contract
    /// holds (balance == locked + claimable), so none can exceed the token's total supply, below 2^256.
    function _flushCredits(uint256 table) private {
        assembly ("memory-safe") {
            for { let entry := table } lt(entry, add(table, 0x400)) { entry := add(entry, 0x40) } {
                let held := mload(entry)
                if held {
                    mstore(0, and(held, 0xffffffffffffffffffffffffffffffffffffffff))
                    mstore(0x20, _claimable.slot)
                    let slot := keccak256(0, 0x40)
                    sstore(slot, add(sload(slot), mload(add(entry, 0x20))))
                }
            }
        }
    }

    function _credit(address account, uint256 amount) private {
        if (amount == 0) return;
        // unchecked: credits are backed by tokens this contract holds (balance == locked + claimable), so no
        // account's credit can exceed the token's total supply, itself below 2^256.
        assembly ("memory-safe") {
            mstore(0, and(account, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(0x20, _claimable.slot)
            let slot := keccak256(0, 0x40)
            sstore(slot, add(sload(slot), amount))
        }
    }

    /// @dev `lists[i]` without Solidity's offset checks (which cost ~1k gas per access of a nested calldata
    /// array): the caller has checked `i < lists.length`, and an offset or length pointing past the calldata only
    /// reads zeros, never memory or storage, so a malformed batch can at worst revert or waste its sender's gas.
    function _addressesAt(address[][] calldata lists, uint256 i) private pure returns (address[] calldata list) {
        assembly ("memory-safe") {
            let head := add(lists.offset, calldataload(add(lists.offset, shl(5, i))))
            list.length := calldataload(head)
            list.offset := add(head, 0x20)
        }
    }

    /// @dev `lists[i]` for report lists; see `_addressesAt`.
    function _reportsAt(ReplicaReport[][] calldata lists, uint256 i)
        private
        pure
        returns (ReplicaReport[] calldata list)
    {
        assembly ("memory-safe") {
            let head := add(lists.offset, calldataload(add(lists.offset, shl(5, i))))
            list.length := calldataload(head)
            list.offset := add(head, 0x20)
        }
    }

    /// @dev Slot 1 of task `taskId` (as Solidity lays out `_tasks[taskId]`).
    function _statusSlot(uint256 taskId) private pure returns (uint256 slot) {
        assembly ("memory-safe") {
            mstore(0, taskId)
            mstore(0x20, _tasks.slot)
            slot := add(keccak256(0, 0x40), 1)
        }
    }

    /// @dev Slot 1 of task `taskId` and the slot of `_replicas[taskId][provider]`, in one go.
    function _slots(uint256 taskId, address provider) private pure returns (uint256 statusSlot, uint256 replicaSlot) {
        assembly ("memory-safe") {
            mstore(0, taskId)
            mstore(0x20, _tasks.slot)
            statusSlot := add(keccak256(0, 0x40), 1)
            mstore(0x20, _replicas.slot)
            mstore(0x20, keccak256(0, 0x40))
            mstore(0, and(provider, 0xffffffffffffffffffffffffffffffffffffffff))
            replicaSlot := keccak256(0, 0x40)
        }
    }

    /// @dev The slot of the mapping `_replicas[taskId]` (its entries hash their key with it).
    function _replicaBase(uint256 taskId) private pure returns (uint256 base) {
        assembly ("memory-safe") {
            mstore(0, taskId)
            mstore(0x20, _replicas.slot)
            base := keccak256(0, 0x40)
        }
    }

    /// @dev The slot of `provider`'s entry in the mapping at `base` (a provider already checked to fit 160 bits).
    function _slotIn(uint256 base, uint256 provider) private pure returns (uint256 slot) {
        assembly ("memory-safe") {
            mstore(0, provider)
            mstore(0x20, base)
            slot := keccak256(0, 0x40)
        }
    }

    function _load(uint256 slot) private view returns (uint256 value) {
        assembly ("memory-safe") {
            value := sload(slot)
        }
    }

    function _store(uint256 slot, uint256 value) private {
        assembly ("memory-safe") {
            sstore(slot, value)
        }
    }

    function _status(Task storage t) private view returns (uint256 status) {
        assembly ("memory-safe") {
            status := sload(add(t.slot, 1))
        }
    }

    function _writeTask(Task storage t, uint256 head, uint256 status) private {
        assembly ("memory-safe") {
            sstore(t.slot, head)
            sstore(add(t.slot, 1), status)
        }
    }

    function _setStatus(Task storage t, uint256 status) private {
        assembly ("memory-safe") {
            sstore(add(t.slot, 1), status)
        }
    }

    function _head(Task storage t) private view returns (address customer, uint96 maxPricePerReplica) {
        uint256 head;
        assembly ("memory-safe") {
            head := sload(t.slot)
        }
        return (address(uint160(head)), uint96(head >> 160));
    }

    function _withState(uint256 status, TaskState state) private pure returns (uint256) {
        return (status & ~_STATE_MASK) | (uint256(uint8(state)) << _STATE);
    }

    /// @dev Sets `winner` to the reported hash with the most revealed votes and `votes` to its count; a tie for the
    /// most votes gives 0 votes (no quorum). Only Revealed replicas vote; their reported hashes were checked.
    function _plurality(ReplicaReport[] calldata reports, uint256[] memory words)
        private
        pure
        returns (bytes32 winner, uint256 votes)
    {
        uint256 n = words.length;
        bool tie;
        for (uint256 i; i < n; ++i) {
            if (words[i] >> _REPLICA_STATE != uint8(ReplicaState.Revealed)) continue;
            bytes32 h = reports[i].resultHash;
            if (votes != 0 && h == winner) continue;
            // Counting from i is the full count at h's first occurrence; at a later one it is smaller than that
            // full count, which was already compared, so it can neither win nor fake a tie.
            uint256 count;
            for (uint256 j = i; j < n; ++j) {
                if (words[j] >> _REPLICA_STATE == uint8(ReplicaState.Revealed) && reports[j].resultHash == h) ++count;
            }
            if (count > votes) {
                (winner, votes, tie) = (h, count, false);
            } else if (count == votes) {
                tie = true;
            }
        }
        if (tie) votes = 0;
    }

    function _revertState(uint256 taskId, uint256 status) private pure {
        TaskState state = TaskState(uint8(status >> _STATE));
        if (state == TaskState.None) revert EscrowTaskNotFound(taskId);
        revert EscrowTaskNotInState(taskId, state);
    }

    function _revertRevealsPending(uint256 taskId, uint256 status) private view {
        revert EscrowRevealsPending(taskId, uint40(status >> _REVEAL_DEADLINE), uint64(block.timestamp));
    }

    function _setProtocolFeeBps(uint16 value) private {
        if (value > MAX_PROTOCOL_FEE_BPS) revert EscrowParameterOutOfRange("protocolFeeBps", value);
        uint16 old = _params.protocolFeeBps;
        _params.protocolFeeBps = value;
        emit EscrowParameterChanged("protocolFeeBps", old, value);
    }

    function _setCommitWindow(uint64 value) private {
        if (value == 0 || value > MAX_WINDOW) revert EscrowParameterOutOfRange("commitWindow", value);
        uint64 old = _params.commitWindow;
        _params.commitWindow = value;
        emit EscrowParameterChanged("commitWindow", old, value);
    }

    function _setRevealWindow(uint64 value) private {
        if (value == 0 || value > MAX_WINDOW) revert EscrowParameterOutOfRange("revealWindow", value);
        uint64 old = _params.revealWindow;
        _params.revealWindow = value;
        emit EscrowParameterChanged("revealWindow", old, value);
    }

    function _setExpiryGrace(uint64 value) private {
        if (value > MAX_WINDOW) revert EscrowParameterOutOfRange("expiryGrace", value);
        uint64 old = _params.expiryGrace;
        _params.expiryGrace = value;
        emit EscrowParameterChanged("expiryGrace", old, value);
    }

    function _setSlashDissentBps(uint16 value) private {
        if (value > BPS) revert EscrowParameterOutOfRange("slashDissentBps", value);
        uint16 old = _params.slashDissentBps;
        _params.slashDissentBps = value;
        emit EscrowParameterChanged("slashDissentBps", old, value);
    }

    function _setSlashNoShowBps(uint16 value) private {
        if (value > BPS) revert EscrowParameterOutOfRange("slashNoShowBps", value);
        uint16 old = _params.slashNoShowBps;
        _params.slashNoShowBps = value;
        emit EscrowParameterChanged("slashNoShowBps", old, value);
    }

    function _setTreasury(address value) private {
        if (value == address(0)) revert EscrowParameterOutOfRange("treasury", 0);
        address old = _treasury;
        _treasury = value;
        emit EscrowParameterChanged("treasury", uint256(uint160(old)), uint256(uint160(value)));
    }
}
