// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {GridToken} from "../../src/GridToken.sol";
import {ProviderRegistry} from "../../src/ProviderRegistry.sol";
import {TaskEscrow} from "../../src/TaskEscrow.sol";
import {IProviderRegistry} from "../../src/interfaces/IProviderRegistry.sol";
import {EscrowHandler} from "./handlers/EscrowHandler.sol";

/// @dev Money invariants of TaskEscrow and ProviderRegistry under random sequences of every entry point, driven by
/// EscrowHandler (which keeps the replica lists the escrow does not store).
contract EscrowInvariants is Test {
    GridToken internal token;
    ProviderRegistry internal registry;
    TaskEscrow internal escrow;
    EscrowHandler internal handler;

    function setUp() public {
        address admin = makeAddr("admin");
        address treasury = makeAddr("treasury");
        token = new GridToken(address(this), 1_000_000_000e18);
        registry = new ProviderRegistry(IERC20(address(token)), admin, treasury, 100e18, 1 days);
        escrow = new TaskEscrow(
            IERC20(address(token)), IProviderRegistry(address(registry)), admin, treasury, 250, 1 hours, 1 hours, 1 hours, 1_000, 500
        );
        vm.prank(admin);
        registry.setEscrow(address(escrow));
        handler = new EscrowHandler(token, registry, escrow, admin, treasury);
        token.transfer(address(handler), 100_000_000e18);
        for (uint256 i; i < 3; ++i) {
            token.transfer(handler.customers(i), 10_000_000e18);
        }
        for (uint256 i; i < 6; ++i) {
            token.transfer(handler.providers(i), 1_000e18);
        }
        handler.bootstrap();
        targetContract(address(handler));
        // progress is listed four times: it weighs the lifecycle up so that runs of 100 calls settle tasks
        bytes4[] memory selectors = new bytes4[](26);
        selectors[0] = EscrowHandler.postTask.selector;
        selectors[1] = EscrowHandler.postTasks.selector;
        selectors[2] = EscrowHandler.postTaskWithPermit.selector;
        selectors[3] = EscrowHandler.cancelTask.selector;
        selectors[4] = EscrowHandler.assign.selector;
        selectors[5] = EscrowHandler.assignMany.selector;
        selectors[6] = EscrowHandler.commit.selector;
        selectors[7] = EscrowHandler.commitMany.selector;
        selectors[8] = EscrowHandler.reveal.selector;
        selectors[9] = EscrowHandler.revealMany.selector;
        selectors[10] = EscrowHandler.finalize.selector;
        selectors[11] = EscrowHandler.finalizeMany.selector;
        selectors[12] = EscrowHandler.expire.selector;
        selectors[13] = EscrowHandler.claim.selector;
        selectors[14] = EscrowHandler.claimFor.selector;
        selectors[15] = EscrowHandler.stake.selector;
        selectors[16] = EscrowHandler.stakeWithPermit.selector;
        selectors[17] = EscrowHandler.requestUnstake.selector;
        selectors[18] = EscrowHandler.withdraw.selector;
        selectors[19] = EscrowHandler.setProtocolFeeBps.selector;
        selectors[20] = EscrowHandler.setSlashBps.selector;
        selectors[21] = EscrowHandler.warp.selector;
        selectors[22] = EscrowHandler.progress.selector;
        selectors[23] = EscrowHandler.progress.selector;
        selectors[24] = EscrowHandler.progress.selector;
        selectors[25] = EscrowHandler.progress.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        excludeSender(address(escrow));
        excludeSender(address(registry));
        excludeSender(address(token));
    }

    /// (a) The escrow holds exactly what it owes: token balance == totalLocked + totalClaimable == what open tasks
    /// owe plus the credits that appeared and were not claimed.
    function invariant_escrowBalanceEqualsOwed() public view {
        uint256 balance = token.balanceOf(address(escrow));
        assertEq(escrow.totalLocked() + escrow.totalClaimable(), balance, "totals != balance");
        assertEq(handler.ghost_owed() + handler.ghost_credits(), balance, "owed + credits != balance");
    }

    /// (b) No task pays out more than it locked: the credits of a closed task (payments, fee, refund) sum to its
    /// escrow, an open task has none, and the credits reported are the credits that appeared.
    function invariant_noTaskPaysOutMoreThanLocked() public view {
        assertEq(handler.taskPayoutViolations(), 0);
    }

    /// (c) A provider is never paid twice for one task (counted from events and from its credit changes).
    function invariant_providerNeverPaidTwice() public view {
        assertLe(handler.ghost_maxPaidCount(), 1);
    }

    /// (d) Stake accounting adds up: registry balance == totalStaked + totalUnbonding == sum over providers.
    function invariant_stakeAccountingAddsUp() public view {
        uint256 sum;
        for (uint256 i; i < handler.providerCount(); ++i) {
            address p = handler.providers(i);
            (uint256 unbonding,) = registry.unbondingOf(p);
            sum += registry.stakeOf(p) + unbonding;
        }
        uint256 totals = registry.totalStaked() + registry.totalUnbonding();
        assertEq(token.balanceOf(address(registry)), totals, "registry balance != totals");
        assertEq(totals, sum, "totals != sum over providers");
    }

    /// (e) Every slash went where no party to a task gains: what finalize took from providers' stakes equals what the
    /// treasury received and what the Slashed events report, and no customer's or provider's wallet gained from it.
    function invariant_slashesGoOnlyToTreasury() public view {
        assertEq(handler.ghost_slashToTreasury(), handler.ghost_slashed(), "slashed != received by the treasury");
        assertEq(handler.ghost_slashEvents(), handler.ghost_slashed(), "Slashed events != stake taken");
        assertEq(handler.ghost_slashToParties(), 0, "a customer or provider received slashed stake");
    }

    function afterInvariant() public view {
        handler.callSummary();
    }
}
