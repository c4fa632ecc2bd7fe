// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";

/// @title ProviderRegistry
/// @dev Holds providers' GridToken stake, their capability announcements and their assignment locks.
/// A provider stakes (approve or permit), is eligible for assignments while its active stake is at least
/// `minStake`, and leaves through `requestUnstake` + `withdraw` after `unbondingDelay`. The TaskEscrow (set once
/// by governance with `setEscrow`) locks one assignment per replica (`lockForTask` answers false instead of
/// reverting when the stake is below the minimum), unlocks them in batches at finalize/expiry and slashes
/// dissenters and no-shows; a slash takes basis points of active stake first, then of unbonding stake, and sends
/// all of it to the DAO treasury: no party to the task (customer, co-replicas) gains from a slash, so a customer
/// with sybil providers cannot out-vote an honest one and collect (docs/decisions.md, docs/verification.md).
///
/// NOTE: stake accounting is exact: token.balanceOf(this) == totalStaked + totalUnbonding == the sum of every
/// provider's stake and unbonding amount (tokens sent here by plain `transfer` break the first equality upward
/// only, and are not recoverable). A locked provider cannot start unbonding, but stake that was already
/// unbonding when it got assigned stays slashable until withdrawn. A slash emits one `Slashed` event, whose
/// recipient is the treasury at the time; a slash of zero (no stake left) emits none.
contract ProviderRegistry is IProviderRegistry, AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Longest unbonding delay governance may set.
    uint64 public constant MAX_UNBONDING_DELAY = 365 days;
    /// @notice Basis-point denominator.
    uint16 public constant BPS = 10_000;

    /// @dev lockForTasks / unlockForTasks address `stake` as slot 0 and `activeAssignments` as the top 32 bits of
    /// slot 2 in assembly: keep this layout.
    struct Provider {
        uint256 stake; // active stake
        uint256 unbonding; // stake waiting for `releaseTime`
        address operator; // who runs it (itself when registered with 0)
        uint64 releaseTime; // when `unbonding` may be withdrawn
        uint32 activeAssignments; // replicas held (locks)
        bytes32 capabilitiesHash;
        string capabilitiesURI;
    }

    IERC20 private immutable _token;

    mapping(address provider => Provider) private _providers;
    uint256 private _totalStaked;
    uint256 private _totalUnbonding;
    uint256 private _minStake;
    address private _escrow;
    address private _treasury;
    uint64 private _unbondingDelay;

    modifier onlyEscrow() {
        if (msg.sender != _escrow) revert RegistryCallerNotEscrow(msg.sender);
        _;
    }

    constructor(
        IERC20 token_,
        address admin,
        address treasury_,
        uint256 minStake_,
        uint64 unbondingDelay_
    ) {
        _token = token_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setTreasury(treasury_);
        _setMinStake(minStake_);
        _setUnbondingDelay(unbondingDelay_);
    }

    // ------------------------------------------------------------------ provider entry points

    /// @inheritdoc IProviderRegistry
    function register(address operator, bytes32 capabilitiesHash, string calldata capabilitiesURI) external {
        _register(msg.sender, operator == address(0) ? msg.sender : operator, capabilitiesHash, capabilitiesURI);
    }

    /// @inheritdoc IProviderRegistry
    function stake(uint256 amount) external nonReentrant {
        _stake(msg.sender, amount);
    }

    /// @inheritdoc IProviderRegistry
    /// @dev A failing permit is ignored (someone may have front-run it); the pull then needs the allowance.
    function stakeWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s) external nonReentrant {
        try IERC20Permit(address(_token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        _stake(msg.sender, amount);
    }

    /// @inheritdoc IProviderRegistry
    function requestUnstake(uint256 amount) external nonReentrant {
        _requestUnstake(msg.sender, amount);
    }

    /// @inheritdoc IProviderRegistry
    function withdraw() external nonReentrant {
        _withdraw(msg.sender);
    }

    // ------------------------------------------------------------------ escrow entry points

    /// @inheritdoc IProviderRegistry
    function lockForTask(address provider) external onlyEscrow returns (bool locked) {
        Provider storage p = _providers[provider];
        if (p.stake < _minStake) return false;
        p.activeAssignments += 1;
        return true;
    }

    /// @inheritdoc IProviderRegistry
    /// @dev See `_countLocks`: the batch is tallied per provider in memory first, so each distinct provider's
    /// stake is read and its lock count written once per batch, not once per replica.
    function lockForTasks(address[] calldata providers) external onlyEscrow returns (uint256 notStaked) {
        return _countLocks(providers, true);
    }

    /// @inheritdoc IProviderRegistry
    /// @dev A provider may appear several times (one entry per replica); reverts RegistryNotLocked when a provider
    /// has fewer assignments than entries. Tallied per provider first, like `lockForTasks`.
    function unlockForTasks(address[] calldata providers) external onlyEscrow {
        _countLocks(providers, false);
    }

    /// @inheritdoc IProviderRegistry
    function slash(address provider, uint256 taskId, uint16 bps)
        external
        onlyEscrow
        nonReentrant
        returns (uint256 slashed)
    {
        return _slash(provider, taskId, bps);
    }

    // ------------------------------------------------------------------ governance

    /// @notice Set the escrow that may lock, unlock and slash. Callable once (the escrow is deployed after this).
    function setEscrow(address escrow_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (_escrow != address(0)) revert RegistryEscrowAlreadySet(_escrow);
        if (escrow_ == address(0)) revert RegistryParameterOutOfRange("escrow", 0);
        _escrow = escrow_;
        emit RegistryParameterChanged("escrow", 0, uint256(uint160(escrow_)));
    }

    /// @inheritdoc IProviderRegistry
    function setMinStake(uint256 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setMinStake(value);
    }

    /// @inheritdoc IProviderRegistry
    function setUnbondingDelay(uint64 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setUnbondingDelay(value);
    }

    /// @inheritdoc IProviderRegistry
    function setTreasury(address value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setTreasury(value);
    }

    // ------------------------------------------------------------------ views

    /// @notice The staking token.
    function token() external view returns (IERC20) {
        return _token;
    }

    /// @notice The escrow allowed to lock, unlock and slash (0 until set).
    function escrow() external view returns (address) {
        return _escrow;
    }

    function stakeOf(address provider) external view returns (uint256) {
        return _providers[provider].stake;
    }

    function unbondingOf(address provider) external view returns (uint256 amount, uint64 releaseTime) {
        Provider storage p = _providers[provider];
        return (p.unbonding, p.releaseTime);
    }

    function activeAssignments(address provider) external view returns (uint256) {
        return _providers[provider].activeAssignments;
    }

    function operatorOf(address provider) external view returns (address) {
        return _providers[provider].operator;
    }

    function capabilitiesOf(address provider)
        external
        view
        returns (bytes32 capabilitiesHash, string memory capabilitiesURI)
    {
        Provider storage p = _providers[provider];
        return (p.capabilitiesHash, p.capabilitiesURI);
    }

    function isEligible(address provider) external view returns (bool) {
        return _providers[provider].stake >= _minStake;
    }

    function minStake() external view returns (uint256) {
        return _minStake;
    }

    function unbondingDelay() external view returns (uint64) {
        return _unbondingDelay;
    }

    function treasury() external view returns (address) {
        return _treasury;
    }

    function totalStaked() external view returns (uint256) {
        return _totalStaked;
    }

    function totalUnbonding() external view returns (uint256) {
        return _totalUnbonding;
    }

    // ------------------------------------------------------------------ transitions

    /// @dev Adds (`lock`) or removes one assignment per entry of `providers`. An assign or finalize batch repeats
    /// the same few providers many times, so the entries are tallied in a 16-way direct-mapped memory table
    /// (keyed by the address's low 4 bits; a provider meeting a slot held by another flushes that one to storage)
    /// and each tally is written to storage once. Assembly, because this runs once per replica of every batch.
    /// Locking first checks every distinct provider's stake (the same table, counting nothing): on the first entry
    /// whose provider is below `minStake` it returns that index with nothing locked; otherwise it returns
    /// `providers.length`. Unlocking reverts RegistryNotLocked for a provider with fewer assignments than entries.
    /// Layout relied on: `stake` is slot 0 of a Provider, `activeAssignments` the top 32 bits of slot 2. A count
    /// cannot wrap: every lock stands for a replica, and 2^32 of them would take more gas than 2^32 fresh storage
    /// slots (~10^14).
    function _countLocks(address[] calldata providers, bool lock) private returns (uint256 result) {
        uint256 n = providers.length;
        result = n;
        uint256 minimum = _minStake;
        uint256 base;
        assembly ("memory-safe") {
            base := _providers.slot
        }
        if (lock) {
            // pass 1: stakes (a table entry holds the provider tagged with bit 160, so 0 means empty)
            assembly ("memory-safe") {
                let table := mload(0x40)
                calldatacopy(table, calldatasize(), 0x200)
                for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                    let tagged := or(calldataload(add(providers.offset, shl(5, i))), shl(160, 1))
                    tagged := and(tagged, 0x1ffffffffffffffffffffffffffffffffffffffff)
                    let entry := add(table, shl(5, and(tagged, 0xf)))
                    if iszero(eq(mload(entry), tagged)) {
                        mstore(0, and(tagged, 0xffffffffffffffffffffffffffffffffffffffff))
                        mstore(0x20, base)
                        if lt(sload(keccak256(0, 0x40)), minimum) {
                            result := i
                            break
                        }
                        mstore(entry, tagged)
                    }
                }
            }
            if (result != n) return result;
        }
        address notLocked;
        bool failed;
        assembly ("memory-safe") {
            // pass 2: tallies; entry = (tagged provider, count)
            let table := mload(0x40)
            calldatacopy(table, calldatasize(), 0x400)
            let one := shl(224, 1)
            function flush(tagged, count, base_, up, one_) -> short {
                mstore(0, and(tagged, 0xffffffffffffffffffffffffffffffffffffffff))
                mstore(0x20, base_)
                let slot := add(keccak256(0, 0x40), 2)
                let word := sload(slot)
                switch up
                case 1 { sstore(slot, add(word, mul(count, one_))) }
                default {
                    if lt(shr(224, word), count) { short := 1 }
                    if iszero(short) { sstore(slot, sub(word, mul(count, one_))) }
                }
            }
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let tagged := or(calldataload(add(providers.offset, shl(5, i))), shl(160, 1))
                tagged := and(tagged, 0x1ffffffffffffffffffffffffffffffffffffffff)
                let entry := add(table, shl(6, and(tagged, 0xf)))
                let held := mload(entry)
                if iszero(eq(held, tagged)) {
                    if held {
                        if flush(held, mload(add(entry, 0x20)), base, lock, one) {
                            notLocked := and(held, 0xffffffffffffffffffffffffffffffffffffffff)
                            failed := 1
                            break
                        }
                    }
                    mstore(entry, tagged)
                    mstore(add(entry, 0x20), 0)
                }
                mstore(add(entry, 0x20), add(mload(add(entry, 0x20)), 1))
            }
            if iszero(failed) {
                for { let e := table } lt(e, add(table, 0x400)) { e := add(e, 0x40) } {
                    let held := mload(e)
                    if held {
                        if flush(held, mload(add(e, 0x20)), base, lock, one) {
                            notLocked := and(held, 0xffffffffffffffffffffffffffffffffffffffff)
                            failed := 1
                            break
                        }
                    }
                }
            }
        }
        if (failed) revert RegistryNotLocked(notLocked);
    }

    function _register(address provider, address operator, bytes32 capabilitiesHash, string calldata uri) internal {
        Provider storage p = _providers[provider];
        p.operator = operator;
        p.capabilitiesHash = capabilitiesHash;
        p.capabilitiesURI = uri;
        emit ProviderRegistered(provider, operator, capabilitiesHash, uri);
    }

    function _stake(address provider, uint256 amount) internal {
        if (amount == 0) revert RegistryZeroAmount();
        Provider storage p = _providers[provider];
        uint256 total = p.stake + amount;
        p.stake = total;
        _totalStaked += amount;
        emit Staked(provider, amount, total);
        _token.safeTransferFrom(provider, address(this), amount);
    }

    function _requestUnstake(address provider, uint256 amount) internal {
        if (amount == 0) revert RegistryZeroAmount();
        Provider storage p = _providers[provider];
        uint32 active = p.activeAssignments;
        if (active != 0) revert RegistryStakeLocked(provider, active);
        uint256 current = p.stake;
        if (amount > current) revert RegistryInsufficientStake(provider, amount, current);
        uint64 releaseTime = uint64(block.timestamp) + _unbondingDelay;
        // unchecked: amount <= current was just checked, and _totalStaked >= current (it is a sum including it).
        unchecked {
            p.stake = current - amount;
            _totalStaked -= amount;
        }
        p.unbonding += amount;
        p.releaseTime = releaseTime;
        _totalUnbonding += amount;
        emit UnstakeRequested(provider, amount, releaseTime);
    }

    function _withdraw(address provider) internal {
        Provider storage p = _providers[provider];
        uint256 amount = p.unbonding;
        if (amount == 0) revert RegistryNothingUnbonding(provider);
        uint64 releaseTime = p.releaseTime;
        if (block.timestamp < releaseTime) {
            revert RegistryUnbondingNotReleased(provider, releaseTime, uint64(block.timestamp));
        }
        p.unbonding = 0;
        p.releaseTime = 0;
        // unchecked: _totalUnbonding is the sum of every provider's unbonding amount, so it is >= amount.
        unchecked {
            _totalUnbonding -= amount;
        }
        emit Withdrawn(provider, amount);
        _token.safeTransfer(provider, amount);
    }

    /// @dev The whole amount goes to the treasury: nothing here names the task's customer or co-replicas, so no
    /// party that can influence the vote can receive any of it.
    function _slash(address provider, uint256 taskId, uint16 bps) internal returns (uint256 amount) {
        if (bps > BPS) revert RegistryParameterOutOfRange("slashBps", bps);
        Provider storage p = _providers[provider];
        uint256 active = p.stake;
        uint256 unbonding = p.unbonding;
        amount = (active + unbonding) * bps / BPS;
        if (amount == 0) return 0;
        uint256 fromActive = amount < active ? amount : active;
        // unchecked: fromActive <= amount, fromActive <= active; amount <= active + unbonding (bps <= BPS) so
        // amount - fromActive <= unbonding; the totals are sums that include this provider's amounts.
        unchecked {
            uint256 fromUnbonding = amount - fromActive;
            p.stake = active - fromActive;
            _totalStaked -= fromActive;
            if (fromUnbonding != 0) {
                p.unbonding = unbonding - fromUnbonding;
                _totalUnbonding -= fromUnbonding;
            }
        }
        address treasury_ = _treasury;
        emit Slashed(provider, taskId, amount, treasury_);
        _token.safeTransfer(treasury_, amount);
    }

    function _setMinStake(uint256 value) internal {
        if (value == 0) revert RegistryParameterOutOfRange("minStake", value);
        uint256 old = _minStake;
        _minStake = value;
        emit RegistryParameterChanged("minStake", old, value);
    }

    function _setUnbondingDelay(uint64 value) internal {
        if (value > MAX_UNBONDING_DELAY) revert RegistryParameterOutOfRange("unbondingDelay", value);
        uint64 old = _unbondingDelay;
        _unbondingDelay = value;
        emit RegistryParameterChanged("unbondingDelay", old, value);
    }

    function _setTreasury(address value) internal {
        if (value == address(0)) revert RegistryParameterOutOfRange("treasury", 0);
        address old = _treasury;
        _treasury = value;
        emit RegistryParameterChanged("treasury", uint256(uint160(old)), uint256(uint160(value)));
    }
}
