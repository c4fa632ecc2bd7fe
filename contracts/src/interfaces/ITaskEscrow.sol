// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ITaskEscrow
/// @notice Errors, events and entry points of the task escrow.
/// @dev A task's life: the customer posts it, locking `maxReplicas * maxPricePerReplica` plus the protocol fee
/// on that amount; the matcher assigns k distinct staked providers (and later extra replicas, up to
/// `maxReplicas`, to replace no-shows or to escalate a disagreement: each assign opens a new commit/reveal round);
/// each provider commits keccak256(abi.encode(resultHash, salt, provider)) before the commit deadline and reveals
/// once every replica has committed or the commit deadline has passed; the settler finalizes after every committed
/// replica revealed or the reveal deadline passed, reporting each replica (provider, revealed hash, metered
/// payment), which the escrow checks against what it stored. Finalize counts the quorum on chain: with `quorum`
/// equal revealed hashes the task is Settled (agreeing replicas credited the settler's metered amount, capped per
/// replica; dissenters and no-shows slashed; protocol fee on what was paid credited to the treasury; the rest
/// credited back to the customer), without it the task is Failed (no-shows slashed, everything credited back).
/// The customer may cancel before assignment; anyone may expire a task whose deadline passed a grace period ago.
/// Money leaves the escrow only through `claim`: every payout, refund and fee is a credit first, so a batch of
/// settlements costs one storage write per payee, not one token transfer per task.
///
/// NOTE: storage is one slot per replica, keyed by (task, provider): the replica's state in the top byte and a
/// 248-bit payload (its round while Assigned, then the low 248 bits of its commitment, then of its revealed
/// result hash). Reveals open when every replica of the current round committed or its commit deadline passed;
/// a replica may commit only in the round it was assigned in. 248 bits keep
/// second-preimage and collision attacks far out of reach (2^248 and 2^124 work). The replica list itself lives
/// in TaskAssigned events; finalize and expire take it back as calldata, sorted by address, and the escrow checks
/// it is complete (as many entries as replicas assigned, each holding a replica of the task). The spec hash is
/// recorded in TaskPosted only, the accepted result hash in TaskSettled only (storing it would cost a fresh slot,
/// 22k gas, per task: over the gas budget; see docs/gas.md).
/// Revealed hashes are public, so replicas assigned in a later round can see earlier reveals; the verifier picks
/// escalation replicas among trusted providers (see docs/verification.md).
interface ITaskEscrow {
    enum TaskState {
        None, // 0: no such task
        Posted, // 1: funds locked, waiting for assignment
        Assigned, // 2: replicas working (commit / reveal rounds)
        Settled, // 3: quorum reached, paid and refunded
        Failed, // 4: no quorum, refunded
        Cancelled, // 5: cancelled by the customer before assignment
        Expired // 6: deadline + grace passed without settlement, refunded
    }

    enum ReplicaState {
        None, // 0: the provider holds no replica of the task
        Assigned, // 1: waiting for its commit
        Committed, // 2: commitment recorded
        Revealed, // 3: result hash revealed
        Agreed, // 4: finalized, agreed with the accepted result (paid)
        Dissented, // 5: finalized, revealed another hash (slashed)
        NoShow, // 6: finalized, never committed or never revealed (slashed)
        Released // 7: finalized without quorum or expired, neither paid nor slashed
    }

    /// @notice The terms of one task, as posted.
    struct TaskTerms {
        bytes32 specHash;
        uint8 replicas; // k: replicas wanted in the first round
        uint8 quorum; // q: equal revealed hashes needed
        uint8 maxReplicas; // replicas paid for in escrow (>= replicas), room for replacements and escalation
        uint96 maxPricePerReplica;
        uint64 deadline; // unix time after which the task may be expired (after the grace period)
    }

    /// @notice One task as stored (two slots).
    struct Task {
        address customer;
        uint96 maxPricePerReplica;
        uint40 deadline;
        uint40 commitDeadline; // current round
        uint40 revealDeadline; // current round
        uint8 replicas;
        uint8 quorum;
        uint8 maxReplicas;
        uint8 assigned; // replicas assigned so far (all rounds)
        uint8 round; // current commit/reveal round (1 after the first assign)
        uint8 roundSize; // replicas assigned in the current round
        uint8 roundCommitted; // of those, how many committed
        uint16 feeBps; // protocol fee rate fixed at post time
        TaskState state;
    }

    /// @notice What the settler reports for one replica at finalize: entries sorted by `provider`, one per
    /// assigned replica. `resultHash` is what the replica revealed (ignored if it did not reveal); `payment` what
    /// it earned (0 unless it agrees with the accepted result; at most `maxPricePerReplica`).
    struct ReplicaReport {
        address provider;
        bytes32 resultHash;
        uint96 payment;
    }

    // ------------------------------------------------------------------ errors
    error EscrowTaskNotFound(uint256 taskId);
    /// @notice The task is in `state`, which does not allow this action.
    error EscrowTaskNotInState(uint256 taskId, TaskState state);
    /// @notice Replica counts do not make sense: need 1 <= quorum <= replicas <= maxReplicas <= 16.
    error EscrowInvalidReplication(uint8 replicas, uint8 quorum, uint8 maxReplicas);
    error EscrowZeroPrice();
    error EscrowZeroSpecHash();
    /// @notice The deadline `deadline` is not after now plus the commit and reveal windows (`earliest`).
    error EscrowDeadlineTooSoon(uint64 deadline, uint64 earliest);
    /// @notice Only the task's customer may do this; `caller` is not it.
    error EscrowNotCustomer(uint256 taskId, address caller);
    /// @notice Assigning `count` more replicas would exceed `maxReplicas` (already `assigned`).
    error EscrowTooManyReplicas(uint256 taskId, uint256 assigned, uint256 count, uint8 maxReplicas);
    /// @notice The first round must assign exactly `replicas` providers; `count` were given.
    error EscrowWrongReplicaCount(uint256 taskId, uint256 count, uint8 replicas);
    /// @notice `provider` already holds a replica of this task.
    error EscrowDuplicateProvider(uint256 taskId, address provider);
    /// @notice `provider`'s stake is below the registry minimum.
    error EscrowProviderNotStaked(uint256 taskId, address provider);
    /// @notice `caller` holds no replica of this task.
    error EscrowNotAssigned(uint256 taskId, address caller);
    /// @notice The replica of `provider` is in `state`, which does not allow this action.
    error EscrowReplicaNotInState(uint256 taskId, address provider, ReplicaState state);
    /// @notice `provider` was assigned in round `replicaRound` and may not commit in round `currentRound`
    /// (a replica that missed its round could otherwise copy reveals made public since).
    error EscrowRoundClosed(uint256 taskId, address provider, uint8 replicaRound, uint8 currentRound);
    /// @notice The commit window closed at `commitDeadline`; it is `nowTime`.
    error EscrowCommitWindowClosed(uint256 taskId, uint64 commitDeadline, uint64 nowTime);
    /// @notice Reveals open once every replica committed or at `commitDeadline`; it is `nowTime`.
    error EscrowRevealNotOpen(uint256 taskId, uint64 commitDeadline, uint64 nowTime);
    /// @notice The reveal window closed at `revealDeadline`; it is `nowTime`.
    error EscrowRevealWindowClosed(uint256 taskId, uint64 revealDeadline, uint64 nowTime);
    /// @notice The revealed hash and salt do not match the commitment (both as stored: low 248 bits).
    error EscrowRevealMismatch(uint256 taskId, address provider, bytes32 expected, bytes32 computed);
    /// @notice Finalize needs every committed replica revealed or the reveal deadline (`revealDeadline`) passed.
    error EscrowRevealsPending(uint256 taskId, uint64 revealDeadline, uint64 nowTime);
    /// @notice The report lists `length` replicas but the task has `assigned`.
    error EscrowReportLength(uint256 taskId, uint256 length, uint256 assigned);
    /// @notice Report entries must be sorted by provider with no repeats; `provider` is out of order.
    error EscrowReportUnsorted(uint256 taskId, address provider);
    /// @notice The reported hash of `provider` is not what it revealed.
    error EscrowReportHashMismatch(uint256 taskId, address provider, bytes32 reported);
    /// @notice Payment `amount` for `provider` exceeds the per-replica cap `cap`.
    error EscrowPaymentAboveCap(uint256 taskId, address provider, uint256 amount, uint256 cap);
    /// @notice A payment was set for a replica that did not agree with the accepted result.
    error EscrowPaymentToNonAgreeing(uint256 taskId, address provider, uint256 amount);
    /// @notice The task may be expired only at `expiresAt`; it is `nowTime`.
    error EscrowNotExpired(uint256 taskId, uint64 expiresAt, uint64 nowTime);
    /// @notice Batch arrays have different lengths.
    error EscrowBatchLengthMismatch(uint256 a, uint256 b);
    /// @notice `account` has nothing to claim.
    error EscrowNothingToClaim(address account);
    /// @notice A parameter value is out of its allowed range.
    error EscrowParameterOutOfRange(bytes32 name, uint256 value);

    // ------------------------------------------------------------------ events
    event TaskPosted(
        uint256 indexed taskId,
        address indexed customer,
        bytes32 specHash,
        uint8 replicas,
        uint8 quorum,
        uint8 maxReplicas,
        uint96 maxPricePerReplica,
        uint64 deadline,
        uint256 escrowed
    );
    event TaskCancelled(uint256 indexed taskId, uint256 refunded);
    /// @notice `provider` got a replica of the task (in the round opened by the RoundOpened of the same call).
    event TaskAssigned(uint256 indexed taskId, address indexed provider);
    /// @notice An assign opened a commit/reveal round; `assigned` replicas are on the task now.
    event RoundOpened(uint256 indexed taskId, uint8 assigned, uint64 commitDeadline, uint64 revealDeadline);
    event ResultCommitted(uint256 indexed taskId, address indexed provider, bytes32 commitment);
    event ResultRevealed(uint256 indexed taskId, address indexed provider, bytes32 resultHash);
    /// @notice Quorum reached on `resultHash` with `agreeing` equal reveals; amounts credited.
    event TaskSettled(uint256 indexed taskId, bytes32 resultHash, uint8 agreeing, uint256 paid, uint256 fee, uint256 refunded);
    /// @notice No quorum; the customer was credited `refunded`.
    event TaskFailed(uint256 indexed taskId, uint256 refunded);
    event TaskExpired(uint256 indexed taskId, uint256 refunded);
    /// @notice `provider`'s replica ended as `outcome` (Agreed, Dissented, NoShow or Released), credited `paid`.
    event ReplicaFinalized(uint256 indexed taskId, address indexed provider, ReplicaState outcome, uint256 paid);
    /// @notice `account` withdrew `amount` of its credits.
    event Claimed(address indexed account, uint256 amount);
    event EscrowParameterChanged(bytes32 indexed name, uint256 oldValue, uint256 newValue);

    // ------------------------------------------------------------------ customer
    /// @notice Post a task, pulling `escrowFor(maxReplicas, maxPricePerReplica)` with transferFrom.
    /// @return taskId The new task's id (ids start at 1).
    function postTask(TaskTerms calldata terms) external returns (uint256 taskId);

    /// @notice Post several tasks with one transferFrom of their total.
    /// @return firstTaskId The first new id; the others follow consecutively.
    function postTasks(TaskTerms[] calldata terms) external returns (uint256 firstTaskId);

    /// @notice Post a task, authorising the transfer with an EIP-2612 permit signed by the caller for
    /// `permitValue` (at least what the post pulls).
    function postTaskWithPermit(
        TaskTerms calldata terms,
        uint256 permitValue,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (uint256 taskId);

    /// @notice Cancel a task that has not been assigned yet; credits everything back.
    function cancelTask(uint256 taskId) external;

    // ------------------------------------------------------------------ matcher (MATCHER_ROLE)
    /// @notice Assign providers to a task. In Posted state exactly `replicas` providers; in Assigned state any
    /// number of extra replicas up to `maxReplicas` (replacement or escalation), which opens a new round.
    function assign(uint256 taskId, address[] calldata providers) external;

    /// @notice Several assigns in one transaction.
    function assignMany(uint256[] calldata taskIds, address[][] calldata providers) external;

    // ------------------------------------------------------------------ provider
    /// @notice Commit keccak256(abi.encode(resultHash, salt, msg.sender)) before the round's commit deadline.
    function commit(uint256 taskId, bytes32 commitment) external;

    function commitMany(uint256[] calldata taskIds, bytes32[] calldata commitments) external;

    /// @notice Reveal the committed result once every replica committed or the commit deadline passed.
    function reveal(uint256 taskId, bytes32 resultHash, bytes32 salt) external;

    function revealMany(uint256[] calldata taskIds, bytes32[] calldata resultHashes, bytes32[] calldata salts) external;

    // ------------------------------------------------------------------ settler (SETTLER_ROLE)
    /// @notice Count the quorum and settle from the settler's report of every replica (see ReplicaReport).
    function finalize(uint256 taskId, ReplicaReport[] calldata reports) external;

    function finalizeMany(uint256[] calldata taskIds, ReplicaReport[][] calldata reports) external;

    // ------------------------------------------------------------------ anyone
    /// @notice Refund a task whose deadline plus `expiryGrace` has passed and that is not yet closed;
    /// `providers` lists its replicas sorted by address (empty if it was never assigned).
    function expire(uint256 taskId, address[] calldata providers) external;

    /// @notice Withdraw the caller's credits (payments, refunds, fees).
    function claim() external returns (uint256 amount);

    /// @notice Withdraw `account`'s credits to `account` (anyone may push them; the money goes to its owner).
    function claimFor(address account) external returns (uint256 amount);

    // ------------------------------------------------------------------ views
    function getTask(uint256 taskId) external view returns (Task memory);
    /// @notice The provider's replica of a task: its state and the stored 248-bit payload (commitment or hash).
    function replicaOf(uint256 taskId, address provider) external view returns (ReplicaState state, bytes32 payload);
    function taskCount() external view returns (uint256);
    /// @notice What a post pulls for these terms at the current fee.
    function escrowFor(uint8 maxReplicas, uint96 maxPricePerReplica) external view returns (uint256);
    /// @notice Sum of what the escrow still owes for open (Posted and Assigned) tasks.
    function totalLocked() external view returns (uint256);
    /// @notice Sum of all unclaimed credits.
    function totalClaimable() external view returns (uint256);
    function claimable(address account) external view returns (uint256);
    function commitmentFor(bytes32 resultHash, bytes32 salt, address provider) external pure returns (bytes32);
    function protocolFeeBps() external view returns (uint16);
    function commitWindow() external view returns (uint64);
    function revealWindow() external view returns (uint64);
    function expiryGrace() external view returns (uint64);
    function slashDissentBps() external view returns (uint16);
    function slashNoShowBps() external view returns (uint16);
    function treasury() external view returns (address);

    // ------------------------------------------------------------------ governance (DEFAULT_ADMIN_ROLE)
    function setProtocolFeeBps(uint16 value) external;
    function setCommitWindow(uint64 value) external;
    function setRevealWindow(uint64 value) external;
    function setExpiryGrace(uint64 value) external;
    function setSlashDissentBps(uint16 value) external;
    function setSlashNoShowBps(uint16 value) external;
    function setTreasury(address value) external;
}
