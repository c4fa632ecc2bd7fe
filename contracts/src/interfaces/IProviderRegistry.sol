// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IProviderRegistry
/// @notice Errors, events and entry points of the provider stake registry.
/// @dev Providers stake GridToken to be eligible for assignments. Stake is locked while a provider holds
/// assignments; unstaking goes through an unbonding delay. Only the TaskEscrow may lock, unlock and slash.
/// Every parameter is owned by governance (the Timelock holds DEFAULT_ADMIN_ROLE).
interface IProviderRegistry {
    // ------------------------------------------------------------------ errors
    /// @notice `amount` is zero where a positive amount is required.
    error RegistryZeroAmount();
    /// @notice The provider's `stake` is below the `minimum` needed for the action.
    error RegistryStakeBelowMinimum(address provider, uint256 stake, uint256 minimum);
    /// @notice The provider asked to unstake `requested` but has only `available` staked.
    error RegistryInsufficientStake(address provider, uint256 requested, uint256 available);
    /// @notice The provider holds `activeAssignments` assignments, so its stake is locked.
    error RegistryStakeLocked(address provider, uint256 activeAssignments);
    /// @notice Nothing is unbonding for the provider.
    error RegistryNothingUnbonding(address provider);
    /// @notice Unbonded stake is released only at `releaseTime`; it is `nowTime`.
    error RegistryUnbondingNotReleased(address provider, uint64 releaseTime, uint64 nowTime);
    /// @notice Only the escrow may call; `caller` is not it.
    error RegistryCallerNotEscrow(address caller);
    /// @notice The provider has no assignments to unlock.
    error RegistryNotLocked(address provider);
    /// @notice The escrow address was already set.
    error RegistryEscrowAlreadySet(address escrow);
    /// @notice A parameter value is out of its allowed range.
    error RegistryParameterOutOfRange(bytes32 name, uint256 value);

    // ------------------------------------------------------------------ events
    /// @notice The provider announced (or changed) what its device offers.
    event ProviderRegistered(address indexed provider, address indexed operator, bytes32 capabilitiesHash, string capabilitiesURI);
    /// @notice `amount` was added; the provider's stake is now `totalStake`.
    event Staked(address indexed provider, uint256 amount, uint256 totalStake);
    /// @notice `amount` left the active stake and is unbonding until `releaseTime`.
    event UnstakeRequested(address indexed provider, uint256 amount, uint64 releaseTime);
    /// @notice Unbonded stake `amount` was paid back to the provider.
    event Withdrawn(address indexed provider, uint256 amount);
    /// @notice `amount` of the provider's stake was taken for task `taskId` and sent to `recipient`, the treasury
    /// (never a party to the task).
    event Slashed(address indexed provider, uint256 indexed taskId, uint256 amount, address recipient);
    /// @notice A governance parameter changed.
    event RegistryParameterChanged(bytes32 indexed name, uint256 oldValue, uint256 newValue);

    // ------------------------------------------------------------------ provider entry points
    /// @notice Register or update the calling provider's capabilities (hash of its capability document and a URI).
    /// @param operator The operator that runs this provider (for "distinct operators" matching); 0 means itself.
    function register(address operator, bytes32 capabilitiesHash, string calldata capabilitiesURI) external;

    /// @notice Add `amount` tokens (pulled with transferFrom) to the caller's stake. Also a top-up.
    function stake(uint256 amount) external;

    /// @notice Add stake using an EIP-2612 permit instead of a prior approve.
    function stakeWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s) external;

    /// @notice Move `amount` of stake to unbonding; released after `unbondingDelay`. Reverts while assigned.
    /// @dev A second request adds to the unbonding amount and restarts the delay.
    function requestUnstake(uint256 amount) external;

    /// @notice Pay back all released unbonding stake to the caller.
    function withdraw() external;

    // ------------------------------------------------------------------ escrow entry points
    /// @notice Lock one assignment of `provider` if its stake is at least the minimum.
    /// @return locked False (and nothing locked) when the provider is not eligible, so the escrow can revert with
    /// its own error naming the task; one call both checks and locks.
    function lockForTask(address provider) external returns (bool locked);

    /// @notice Lock one assignment of each of `providers` (an entry per replica; a provider may repeat) if every
    /// one's stake is at least the minimum: the batched `lockForTask`, one call for a whole assign batch.
    /// @return notStaked The index of the first entry whose stake is below the minimum, with nothing locked; or
    /// `providers.length` when every entry was locked.
    function lockForTasks(address[] calldata providers) external returns (uint256 notStaked);

    /// @notice Release one assignment of each of `providers` (a finalized or expired task's replicas).
    function unlockForTasks(address[] calldata providers) external;

    /// @notice Take `bps` basis points of `provider`'s stake (active first, then unbonding) for `taskId` and send
    /// all of it to the treasury. The customer gets no share: its remedy is the task's refund.
    /// @return slashed The amount taken.
    function slash(address provider, uint256 taskId, uint16 bps) external returns (uint256 slashed);

    // ------------------------------------------------------------------ views
    function stakeOf(address provider) external view returns (uint256);
    function unbondingOf(address provider) external view returns (uint256 amount, uint64 releaseTime);
    function activeAssignments(address provider) external view returns (uint256);
    function operatorOf(address provider) external view returns (address);
    function capabilitiesOf(address provider) external view returns (bytes32 capabilitiesHash, string memory capabilitiesURI);
    /// @notice True when the provider's active stake is at least `minStake`.
    function isEligible(address provider) external view returns (bool);
    function minStake() external view returns (uint256);
    function unbondingDelay() external view returns (uint64);
    function treasury() external view returns (address);
    function totalStaked() external view returns (uint256);
    function totalUnbonding() external view returns (uint256);

    // ------------------------------------------------------------------ governance (DEFAULT_ADMIN_ROLE)
    function setMinStake(uint256 value) external;
    function setUnbondingDelay(uint64 value) external;
    function setTreasury(address value) external;
}
