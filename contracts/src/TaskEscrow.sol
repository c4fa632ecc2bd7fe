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
/// locked), assign (matcher; providers locked in the ProviderRegistry), commit/reveal rounds (providers),
/// finalize (settler; quorum counted on chain, agreeing replicas paid up to their cap, dissenters and no-shows
/// slashed through the registry, protocol fee to the treasury, the rest refunded), cancel (customer, before
/// assignment) and expire (anyone, after deadline + grace). Tokens move push-style after effects and events.
///
/// NOTE: storage is packed for gas: a task is 3 slots (customer + price, spec hash, deadlines + counts + fee +
/// state) and a replica 2 slots (provider + state, commitment later overwritten by the revealed hash). The
/// accepted result hash is not stored twice: `getTask` reads it from the first Agreed replica. A task owes
/// exactly `escrowFor(maxReplicas, maxPricePerReplica)` at its post-time fee until it closes, so
/// token.balanceOf(this) == totalLocked() == the sum owed by open tasks (tokens sent here by plain `transfer`
/// only add to the balance and are not recoverable). A replica may commit only in the round it was assigned in;
/// a tie for the most-revealed hash counts as no quorum. Every assign must leave room for a full round before the
/// task's deadline. `totalLocked` is a uint128: a post that would overflow it reverts.
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

    /// @dev A task as stored: 3 slots.
    struct TaskRecord {
        // slot 0
        address customer;
        uint96 maxPricePerReplica;
        // slot 1
        bytes32 specHash;
        // slot 2: 3 * 8 + 5 * 1 + 2 + 1 = 32 bytes
        uint64 deadline;
        uint64 commitDeadline;
        uint64 revealDeadline;
        uint8 replicas;
        uint8 quorum;
        uint8 maxReplicas;
        uint8 assigned;
        uint8 roundStart; // index of the first replica of the current round
        uint16 feeBps;
        TaskState state;
    }

    /// @dev Governance parameters, read together: 1 slot.
    struct Params {
        uint16 protocolFeeBps;
        uint64 commitWindow;
        uint64 revealWindow;
        uint64 expiryGrace;
        uint16 slashDissentBps;
        uint16 slashNoShowBps;
    }

    /// @dev Working memory of one finalize.
    struct Tally {
        address[] providers;
        ReplicaState[] outcomes; // replica states, then their outcomes
        bytes32[] hashes; // revealed hashes (0 where not revealed)
        bytes32 winner;
        uint256 votes;
        bool settled;
        uint256 paid;
    }

    IERC20 private immutable _token;
    IProviderRegistry private immutable _registry;

    mapping(uint256 taskId => TaskRecord) private _tasks;
    mapping(uint256 taskId => Replica[MAX_REPLICAS]) private _replicas;
    Params private _params;
    address private _treasury;
    uint128 private _totalLocked;
    uint128 private _taskCount;

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
    function postTask(
        bytes32 specHash,
        uint8 replicas,
        uint8 quorum,
        uint8 maxReplicas,
        uint96 maxPricePerReplica,
        uint64 deadline
    ) external nonReentrant returns (uint256 taskId) {
        return _post(msg.sender, specHash, replicas, quorum, maxReplicas, maxPricePerReplica, deadline);
    }

    /// @inheritdoc ITaskEscrow
    /// @dev A failing permit is ignored (someone may have front-run it); the pull then needs the allowance.
    function postTaskWithPermit(
        bytes32 specHash,
        uint8 replicas,
        uint8 quorum,
        uint8 maxReplicas,
        uint96 maxPricePerReplica,
        uint64 deadline,
        uint256 permitValue,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant returns (uint256 taskId) {
        try IERC20Permit(address(_token)).permit(msg.sender, address(this), permitValue, permitDeadline, v, r, s) {}
            catch {}
        return _post(msg.sender, specHash, replicas, quorum, maxReplicas, maxPricePerReplica, deadline);
    }

    /// @inheritdoc ITaskEscrow
    function cancelTask(uint256 taskId) external nonReentrant {
        _cancel(taskId, msg.sender);
    }

    // ------------------------------------------------------------------ matcher

    /// @inheritdoc ITaskEscrow
    function assign(uint256 taskId, address[] calldata providers) external onlyRole(MATCHER_ROLE) nonReentrant {
        _assign(taskId, providers);
    }

    /// @inheritdoc ITaskEscrow
    function assignMany(uint256[] calldata taskIds, address[][] calldata providers)
        external
        onlyRole(MATCHER_ROLE)
        nonReentrant
    {
        uint256 n = taskIds.length;
        if (providers.length != n) revert EscrowBatchLengthMismatch(n, providers.length);
        for (uint256 i; i < n; ++i) {
            _assign(taskIds[i], providers[i]);
        }
    }

    // ------------------------------------------------------------------ provider

    /// @inheritdoc ITaskEscrow
    function commit(uint256 taskId, bytes32 commitment) external {
        _commit(taskId, msg.sender, commitment);
    }

    /// @inheritdoc ITaskEscrow
    function commitMany(uint256[] calldata taskIds, bytes32[] calldata commitments) external {
        uint256 n = taskIds.length;
        if (commitments.length != n) revert EscrowBatchLengthMismatch(n, commitments.length);
        for (uint256 i; i < n; ++i) {
            _commit(taskIds[i], msg.sender, commitments[i]);
        }
    }

    /// @inheritdoc ITaskEscrow
    function reveal(uint256 taskId, bytes32 resultHash, bytes32 salt) external {
        _reveal(taskId, msg.sender, resultHash, salt);
    }

    /// @inheritdoc ITaskEscrow
    function revealMany(uint256[] calldata taskIds, bytes32[] calldata resultHashes, bytes32[] calldata salts)
        external
    {
        uint256 n = taskIds.length;
        if (resultHashes.length != n) revert EscrowBatchLengthMismatch(n, resultHashes.length);
        if (salts.length != n) revert EscrowBatchLengthMismatch(n, salts.length);
        for (uint256 i; i < n; ++i) {
            _reveal(taskIds[i], msg.sender, resultHashes[i], salts[i]);
        }
    }

    // ------------------------------------------------------------------ settler

    /// @inheritdoc ITaskEscrow
    function finalize(uint256 taskId, uint96[] calldata payments) external onlyRole(SETTLER_ROLE) nonReentrant {
        uint256 fee = _finalize(taskId, payments);
        if (fee != 0) _token.safeTransfer(_treasury, fee);
    }

    /// @inheritdoc ITaskEscrow
    /// @dev Protocol fees of the whole batch go to the treasury in one transfer at the end.
    function finalizeMany(uint256[] calldata taskIds, uint96[][] calldata payments)
        external
        onlyRole(SETTLER_ROLE)
        nonReentrant
    {
        uint256 n = taskIds.length;
        if (payments.length != n) revert EscrowBatchLengthMismatch(n, payments.length);
        uint256 fees;
        for (uint256 i; i < n; ++i) {
            fees += _finalize(taskIds[i], payments[i]);
        }
        if (fees != 0) _token.safeTransfer(_treasury, fees);
    }

    // ------------------------------------------------------------------ anyone

    /// @inheritdoc ITaskEscrow
    function expire(uint256 taskId) external nonReentrant {
        _expire(taskId);
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
    function getTask(uint256 taskId) external view returns (Task memory task) {
        TaskRecord storage t = _tasks[taskId];
        task = Task({
            customer: t.customer,
            maxPricePerReplica: t.maxPricePerReplica,
            specHash: t.specHash,
            deadline: t.deadline,
            commitDeadline: t.commitDeadline,
            revealDeadline: t.revealDeadline,
            replicas: t.replicas,
            quorum: t.quorum,
            maxReplicas: t.maxReplicas,
            assigned: t.assigned,
            feeBps: t.feeBps,
            state: t.state,
            resultHash: bytes32(0)
        });
        if (task.state == TaskState.Settled) {
            Replica[MAX_REPLICAS] storage reps = _replicas[taskId];
            for (uint256 i; i < task.assigned; ++i) {
                if (reps[i].state == ReplicaState.Agreed) {
                    task.resultHash = reps[i].commitment;
                    break;
                }
            }
        }
    }

    /// @inheritdoc ITaskEscrow
    function getReplicas(uint256 taskId) external view returns (Replica[] memory replicas) {
        uint256 n = _tasks[taskId].assigned;
        Replica[MAX_REPLICAS] storage reps = _replicas[taskId];
        replicas = new Replica[](n);
        for (uint256 i; i < n; ++i) {
            replicas[i] = reps[i];
        }
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
    function commitmentFor(bytes32 resultHash, bytes32 salt, address provider) public pure returns (bytes32) {
        return keccak256(abi.encode(resultHash, salt, provider));
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

    function _post(
        address customer,
        bytes32 specHash,
        uint8 replicas,
        uint8 quorum,
        uint8 maxReplicas,
        uint96 maxPricePerReplica,
        uint64 deadline
    ) internal returns (uint256 taskId) {
        if (specHash == bytes32(0)) revert EscrowZeroSpecHash();
        if (quorum == 0 || quorum > replicas || replicas > maxReplicas || maxReplicas > MAX_REPLICAS) {
            revert EscrowInvalidReplication(replicas, quorum, maxReplicas);
        }
        if (maxPricePerReplica == 0) revert EscrowZeroPrice();
        Params memory p = _params;
        // Both windows are <= MAX_WINDOW, so this cannot overflow a uint64 for any realistic timestamp.
        uint64 earliest = uint64(block.timestamp) + p.commitWindow + p.revealWindow;
        if (deadline <= earliest) revert EscrowDeadlineTooSoon(deadline, earliest);

        uint256 escrowed = _escrowed(maxReplicas, maxPricePerReplica, p.protocolFeeBps);
        taskId = ++_taskCount;
        // escrowed <= 16 * 2^96 * 1.1 < 2^101, so the cast is exact; the checked add reverts on overflow.
        _totalLocked += uint128(escrowed);
        _tasks[taskId] = TaskRecord({
            customer: customer,
            maxPricePerReplica: maxPricePerReplica,
            specHash: specHash,
            deadline: deadline,
            commitDeadline: 0,
            revealDeadline: 0,
            replicas: replicas,
            quorum: quorum,
            maxReplicas: maxReplicas,
            assigned: 0,
            roundStart: 0,
            feeBps: p.protocolFeeBps,
            state: TaskState.Posted
        });
        emit TaskPosted(
            taskId, customer, specHash, replicas, quorum, maxReplicas, maxPricePerReplica, deadline, escrowed
        );
        _token.safeTransferFrom(customer, address(this), escrowed);
    }

    function _cancel(uint256 taskId, address caller) internal {
        TaskRecord storage t = _tasks[taskId];
        TaskState state = t.state;
        if (state == TaskState.None) revert EscrowTaskNotFound(taskId);
        address customer = t.customer;
        if (caller != customer) revert EscrowNotCustomer(taskId, caller);
        if (state != TaskState.Posted) revert EscrowTaskNotInState(taskId, state);
        uint256 refund = _escrowed(t.maxReplicas, t.maxPricePerReplica, t.feeBps);
        t.state = TaskState.Cancelled;
        _unlockFunds(refund);
        emit TaskCancelled(taskId, refund);
        _token.safeTransfer(customer, refund);
    }

    function _assign(uint256 taskId, address[] calldata providers) internal {
        TaskRecord storage t = _tasks[taskId];
        TaskState state = t.state;
        uint256 count = providers.length;
        uint256 assigned = t.assigned;
        if (state == TaskState.Posted) {
            if (count != t.replicas) revert EscrowWrongReplicaCount(taskId, count, t.replicas);
        } else if (state == TaskState.Assigned) {
            if (count == 0) revert EscrowWrongReplicaCount(taskId, count, t.replicas);
            if (assigned + count > t.maxReplicas) {
                revert EscrowTooManyReplicas(taskId, assigned, count, t.maxReplicas);
            }
        } else {
            _revertState(taskId, state);
        }
        Params memory p = _params;
        uint64 commitDeadline = uint64(block.timestamp) + p.commitWindow;
        uint64 revealDeadline = commitDeadline + p.revealWindow;
        uint64 deadline = t.deadline;
        if (deadline <= revealDeadline) revert EscrowDeadlineTooSoon(deadline, revealDeadline);

        Replica[MAX_REPLICAS] storage reps = _replicas[taskId];
        for (uint256 i; i < count; ++i) {
            address provider = providers[i];
            for (uint256 j; j < assigned; ++j) {
                if (reps[j].provider == provider) revert EscrowDuplicateProvider(taskId, provider);
            }
            for (uint256 j; j < i; ++j) {
                if (providers[j] == provider) revert EscrowDuplicateProvider(taskId, provider);
            }
            if (!_registry.isEligible(provider)) revert EscrowProviderNotStaked(taskId, provider);
            Replica storage r = reps[assigned + i];
            r.provider = provider;
            r.state = ReplicaState.Assigned;
        }
        // assigned + count <= maxReplicas <= 16 was checked (or count == replicas <= maxReplicas), so uint8 fits.
        t.roundStart = uint8(assigned);
        t.assigned = uint8(assigned + count);
        t.commitDeadline = commitDeadline;
        t.revealDeadline = revealDeadline;
        t.state = TaskState.Assigned;
        for (uint256 i; i < count; ++i) {
            emit TaskAssigned(taskId, providers[i], uint8(assigned + i), commitDeadline, revealDeadline);
        }
        for (uint256 i; i < count; ++i) {
            _registry.lockForTask(providers[i]);
        }
    }

    function _commit(uint256 taskId, address provider, bytes32 commitment) internal {
        TaskRecord storage t = _tasks[taskId];
        TaskState state = t.state;
        if (state != TaskState.Assigned) _revertState(taskId, state);
        (uint256 index, Replica storage r) = _findReplica(taskId, t.assigned, provider);
        ReplicaState rs = r.state;
        if (rs != ReplicaState.Assigned) revert EscrowReplicaNotInState(taskId, provider, rs);
        uint8 roundStart = t.roundStart;
        if (index < roundStart) revert EscrowRoundClosed(taskId, provider, index, roundStart);
        uint64 commitDeadline = t.commitDeadline;
        if (block.timestamp > commitDeadline) {
            revert EscrowCommitWindowClosed(taskId, commitDeadline, uint64(block.timestamp));
        }
        r.state = ReplicaState.Committed;
        r.commitment = commitment;
        emit ResultCommitted(taskId, provider, commitment);
    }

    function _reveal(uint256 taskId, address provider, bytes32 resultHash, bytes32 salt) internal {
        TaskRecord storage t = _tasks[taskId];
        TaskState state = t.state;
        if (state != TaskState.Assigned) _revertState(taskId, state);
        uint64 commitDeadline = t.commitDeadline;
        bool commitClosed = block.timestamp > commitDeadline;
        (Replica storage r, bool allCommitted) = _findRevealer(taskId, t.assigned, provider, commitClosed);
        ReplicaState rs = r.state;
        if (rs != ReplicaState.Committed) revert EscrowReplicaNotInState(taskId, provider, rs);
        if (!commitClosed && !allCommitted) {
            revert EscrowRevealNotOpen(taskId, commitDeadline, uint64(block.timestamp));
        }
        uint64 revealDeadline = t.revealDeadline;
        if (block.timestamp > revealDeadline) {
            revert EscrowRevealWindowClosed(taskId, revealDeadline, uint64(block.timestamp));
        }
        bytes32 expected = r.commitment;
        bytes32 computed = commitmentFor(resultHash, salt, provider);
        if (computed != expected) revert EscrowRevealMismatch(taskId, provider, expected, computed);
        r.state = ReplicaState.Revealed;
        r.commitment = resultHash;
        emit ResultRevealed(taskId, provider, resultHash);
    }

    /// @dev Settles or fails the task; returns the protocol fee, which the caller sends to the treasury.
    function _finalize(uint256 taskId, uint96[] calldata payments) internal returns (uint256 fee) {
        TaskRecord storage t = _tasks[taskId];
        TaskState state = t.state;
        if (state != TaskState.Assigned) _revertState(taskId, state);
        uint256 assigned = t.assigned;
        if (payments.length != assigned) revert EscrowPaymentsLength(taskId, payments.length, assigned);

        Tally memory tally = _loadForFinalize(taskId, t, assigned);
        _plurality(tally);
        tally.settled = tally.votes >= t.quorum;
        _judge(taskId, t.maxPricePerReplica, payments, tally);

        uint16 feeBps = t.feeBps;
        uint256 escrowed = _escrowed(t.maxReplicas, t.maxPricePerReplica, feeBps);
        if (tally.settled) fee = tally.paid * feeBps / BPS;
        // paid <= assigned * cap <= maxReplicas * cap, so paid + fee(paid) <= escrowed and this cannot underflow.
        uint256 refund = escrowed - tally.paid - fee;
        t.state = tally.settled ? TaskState.Settled : TaskState.Failed;
        _unlockFunds(escrowed);

        for (uint256 i; i < assigned; ++i) {
            emit ReplicaFinalized(taskId, tally.providers[i], tally.outcomes[i]);
            if (tally.outcomes[i] == ReplicaState.Agreed && payments[i] != 0) {
                emit ProviderPaid(taskId, tally.providers[i], payments[i]);
            }
        }
        if (tally.settled) {
            // votes <= assigned <= 16
            emit TaskSettled(taskId, tally.winner, uint8(tally.votes), tally.paid, fee, refund);
        } else {
            emit TaskFailed(taskId, refund);
        }
        address customer = t.customer;
        _payOut(taskId, customer, tally, payments);
        if (refund != 0) _token.safeTransfer(customer, refund);
    }

    /// @dev Reads every replica of the task (provider, state, revealed hash) and reverts while reveals are pending:
    /// a commitment not yet revealed, or a current-round replica that may still commit, before the reveal deadline.
    function _loadForFinalize(uint256 taskId, TaskRecord storage t, uint256 assigned)
        internal
        view
        returns (Tally memory tally)
    {
        Replica[MAX_REPLICAS] storage reps = _replicas[taskId];
        address[] memory providers = new address[](assigned);
        ReplicaState[] memory states = new ReplicaState[](assigned);
        bytes32[] memory hashes = new bytes32[](assigned);
        tally.providers = providers;
        tally.outcomes = states;
        tally.hashes = hashes;
        bool pending;
        uint256 roundStart = t.roundStart;
        bool commitClosed = block.timestamp > t.commitDeadline;
        for (uint256 i; i < assigned; ++i) {
            Replica storage r = reps[i];
            providers[i] = r.provider;
            ReplicaState rs = r.state;
            states[i] = rs;
            if (rs == ReplicaState.Revealed) {
                hashes[i] = r.commitment;
            } else if (rs == ReplicaState.Committed || (i >= roundStart && !commitClosed)) {
                pending = true;
            }
        }
        uint64 revealDeadline = t.revealDeadline;
        if (pending && block.timestamp <= revealDeadline) {
            revert EscrowRevealsPending(taskId, revealDeadline, uint64(block.timestamp));
        }
    }

    /// @dev Turns each replica's state into its outcome (in `outcomes` and in storage), checks its payment against
    /// the outcome and the cap, and returns the total paid.
    function _judge(uint256 taskId, uint96 cap, uint96[] calldata payments, Tally memory tally) internal {
        Replica[MAX_REPLICAS] storage reps = _replicas[taskId];
        uint256 n = payments.length;
        for (uint256 i; i < n; ++i) {
            ReplicaState outcome = _outcome(tally, i);
            uint256 amount = payments[i];
            if (outcome == ReplicaState.Agreed) {
                if (amount > cap) revert EscrowPaymentAboveCap(taskId, i, amount, cap);
                tally.paid += amount;
            } else if (amount != 0) {
                revert EscrowPaymentToNonAgreeing(taskId, i, amount);
            }
            tally.outcomes[i] = outcome;
            reps[i].state = outcome;
        }
    }

    /// @dev Replica i's outcome from its state before finalize and the tally.
    function _outcome(Tally memory tally, uint256 i) internal pure returns (ReplicaState) {
        if (tally.outcomes[i] != ReplicaState.Revealed) return ReplicaState.NoShow;
        if (!tally.settled) return ReplicaState.Released;
        return tally.hashes[i] == tally.winner ? ReplicaState.Agreed : ReplicaState.Dissented;
    }

    /// @dev The interactions of a finalize: unlock every replica, pay agreeing ones, slash dissenters and no-shows.
    function _payOut(uint256 taskId, address customer, Tally memory tally, uint96[] calldata payments) internal {
        Params memory p = _params;
        uint256 n = payments.length;
        for (uint256 i; i < n; ++i) {
            address provider = tally.providers[i];
            ReplicaState outcome = tally.outcomes[i];
            _registry.unlockForTask(provider);
            if (outcome == ReplicaState.Agreed) {
                if (payments[i] != 0) _token.safeTransfer(provider, payments[i]);
            } else {
                uint16 bps = outcome == ReplicaState.Dissented
                    ? p.slashDissentBps
                    : (outcome == ReplicaState.NoShow ? p.slashNoShowBps : 0);
                if (bps != 0) _registry.slash(provider, taskId, bps, customer);
            }
        }
    }

    function _expire(uint256 taskId) internal {
        TaskRecord storage t = _tasks[taskId];
        TaskState state = t.state;
        if (state != TaskState.Posted && state != TaskState.Assigned) _revertState(taskId, state);
        uint256 expiresAt = uint256(t.deadline) + _params.expiryGrace;
        if (block.timestamp < expiresAt) {
            revert EscrowNotExpired(taskId, uint64(expiresAt), uint64(block.timestamp));
        }
        uint256 assigned = t.assigned;
        Replica[MAX_REPLICAS] storage reps = _replicas[taskId];
        address[] memory providers = new address[](assigned);
        for (uint256 i; i < assigned; ++i) {
            Replica storage r = reps[i];
            providers[i] = r.provider;
            r.state = ReplicaState.Released;
        }
        uint256 refund = _escrowed(t.maxReplicas, t.maxPricePerReplica, t.feeBps);
        t.state = TaskState.Expired;
        _unlockFunds(refund);
        for (uint256 i; i < assigned; ++i) {
            emit ReplicaFinalized(taskId, providers[i], ReplicaState.Released);
        }
        emit TaskExpired(taskId, refund);
        for (uint256 i; i < assigned; ++i) {
            _registry.unlockForTask(providers[i]);
        }
        _token.safeTransfer(t.customer, refund);
    }

    // ------------------------------------------------------------------ helpers

    /// @dev What a task with these terms owes in total: the replicas' caps plus the fee on them.
    function _escrowed(uint8 maxReplicas, uint96 maxPricePerReplica, uint16 feeBps) internal pure returns (uint256) {
        uint256 base = uint256(maxReplicas) * maxPricePerReplica;
        return base + base * feeBps / BPS;
    }

    function _unlockFunds(uint256 amount) internal {
        // amount is what one open task owes, which is part of _totalLocked (and < 2^101).
        _totalLocked -= uint128(amount);
    }

    function _findReplica(uint256 taskId, uint256 assigned, address provider)
        internal
        view
        returns (uint256 index, Replica storage r)
    {
        Replica[MAX_REPLICAS] storage reps = _replicas[taskId];
        for (; index < assigned; ++index) {
            r = reps[index];
            if (r.provider == provider) return (index, r);
        }
        revert EscrowNotAssigned(taskId, provider);
    }

    /// @dev One pass that finds `provider`'s replica and, unless the commit window closed, whether every replica
    /// committed (a replica still Assigned means not). Reverts EscrowNotAssigned when there is none.
    function _findRevealer(uint256 taskId, uint256 assigned, address provider, bool commitClosed)
        internal
        view
        returns (Replica storage r, bool allCommitted)
    {
        Replica[MAX_REPLICAS] storage reps = _replicas[taskId];
        uint256 index = type(uint256).max;
        allCommitted = true;
        for (uint256 i; i < assigned; ++i) {
            Replica storage c = reps[i];
            if (c.provider == provider) {
                index = i;
                if (commitClosed || !allCommitted) break;
            } else if (!commitClosed && c.state == ReplicaState.Assigned) {
                allCommitted = false;
                if (index != type(uint256).max) break;
            }
        }
        if (index == type(uint256).max) revert EscrowNotAssigned(taskId, provider);
        r = reps[index];
    }

    /// @dev Sets the tally's winner to the revealed hash with the most votes and `votes` to its count; a tie for the
    /// most votes leaves `votes` at 0 (no quorum).
    function _plurality(Tally memory tally) internal pure {
        ReplicaState[] memory states = tally.outcomes;
        bytes32[] memory hashes = tally.hashes;
        uint256 n = states.length;
        bytes32 winner;
        uint256 votes;
        bool tie;
        for (uint256 i; i < n; ++i) {
            if (states[i] != ReplicaState.Revealed) continue;
            bytes32 h = hashes[i];
            if (votes != 0 && h == winner) continue;
            // Counting from i is the full count at h's first occurrence; at a later one it is smaller than that
            // full count, which was already compared, so it can neither win nor fake a tie.
            uint256 count;
            for (uint256 j = i; j < n; ++j) {
                if (states[j] == ReplicaState.Revealed && hashes[j] == h) ++count;
            }
            if (count > votes) {
                (winner, votes, tie) = (h, count, false);
            } else if (count == votes) {
                tie = true;
            }
        }
        tally.winner = winner;
        tally.votes = tie ? 0 : votes;
    }

    function _revertState(uint256 taskId, TaskState state) internal pure {
        if (state == TaskState.None) revert EscrowTaskNotFound(taskId);
        revert EscrowTaskNotInState(taskId, state);
    }

    function _setProtocolFeeBps(uint16 value) internal {
        if (value > MAX_PROTOCOL_FEE_BPS) revert EscrowParameterOutOfRange("protocolFeeBps", value);
        uint16 old = _params.protocolFeeBps;
        _params.protocolFeeBps = value;
        emit EscrowParameterChanged("protocolFeeBps", old, value);
    }

    function _setCommitWindow(uint64 value) internal {
        if (value == 0 || value > MAX_WINDOW) revert EscrowParameterOutOfRange("commitWindow", value);
        uint64 old = _params.commitWindow;
        _params.commitWindow = value;
        emit EscrowParameterChanged("commitWindow", old, value);
    }

    function _setRevealWindow(uint64 value) internal {
        if (value == 0 || value > MAX_WINDOW) revert EscrowParameterOutOfRange("revealWindow", value);
        uint64 old = _params.revealWindow;
        _params.revealWindow = value;
        emit EscrowParameterChanged("revealWindow", old, value);
    }

    function _setExpiryGrace(uint64 value) internal {
        if (value > MAX_WINDOW) revert EscrowParameterOutOfRange("expiryGrace", value);
        uint64 old = _params.expiryGrace;
        _params.expiryGrace = value;
        emit EscrowParameterChanged("expiryGrace", old, value);
    }

    function _setSlashDissentBps(uint16 value) internal {
        if (value > BPS) revert EscrowParameterOutOfRange("slashDissentBps", value);
        uint16 old = _params.slashDissentBps;
        _params.slashDissentBps = value;
        emit EscrowParameterChanged("slashDissentBps", old, value);
    }

    function _setSlashNoShowBps(uint16 value) internal {
        if (value > BPS) revert EscrowParameterOutOfRange("slashNoShowBps", value);
        uint16 old = _params.slashNoShowBps;
        _params.slashNoShowBps = value;
        emit EscrowParameterChanged("slashNoShowBps", old, value);
    }

    function _setTreasury(address value) internal {
        if (value == address(0)) revert EscrowParameterOutOfRange("treasury", 0);
        address old = _treasury;
        _treasury = value;
        emit EscrowParameterChanged("treasury", uint256(uint160(old)), uint256(uint160(value)));
    }
}
