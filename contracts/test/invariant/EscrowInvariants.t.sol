// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {GridToken} from "../../src/GridToken.sol";
import {ProviderRegistry} from "../../src/ProviderRegistry.sol";
import {TaskEscrow} from "../../src/TaskEscrow.sol";
import {IProviderRegistry} from "../../src/interfaces/IProviderRegistry.sol";
import {EscrowHandler} from "./handlers/EscrowHandler.sol";

/// @dev Money invariants of TaskEscrow and ProviderRegistry under random sequences of every entry point.
contract EscrowInvariants is Test {
    GridToken internal token;
    ProviderRegistry internal registry;
    TaskEscrow internal escrow;
    EscrowHandler internal handler;

    function setUp() public {
        address admin = makeAddr("admin");
        address treasury = makeAddr("treasury");
        token = new GridToken(address(this), 1_000_000_000e18);
        registry = new ProviderRegistry(IERC20(address(token)), admin, treasury, 100e18, 1 days, 5_000);
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
        bytes4[] memory selectors = new bytes4[](19);
        selectors[0] = EscrowHandler.postTask.selector;
        selectors[1] = EscrowHandler.postTaskWithPermit.selector;
        selectors[2] = EscrowHandler.cancelTask.selector;
        selectors[3] = EscrowHandler.assign.selector;
        selectors[4] = EscrowHandler.assignMany.selector;
        selectors[5] = EscrowHandler.commit.selector;
        selectors[6] = EscrowHandler.commitMany.selector;
        selectors[7] = EscrowHandler.reveal.selector;
        selectors[8] = EscrowHandler.revealMany.selector;
        selectors[9] = EscrowHandler.finalize.selector;
        selectors[10] = EscrowHandler.finalizeMany.selector;
        selectors[11] = EscrowHandler.expire.selector;
        selectors[12] = EscrowHandler.stake.selector;
        selectors[13] = EscrowHandler.stakeWithPermit.selector;
        selectors[14] = EscrowHandler.requestUnstake.selector;
        selectors[15] = EscrowHandler.withdraw.selector;
        selectors[16] = EscrowHandler.setProtocolFeeBps.selector;
        selectors[17] = EscrowHandler.setSlashBps.selector;
        selectors[18] = EscrowHandler.warp.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        excludeSender(address(escrow));
        excludeSender(address(registry));
        excludeSender(address(token));
    }

    /// (a) The escrow holds exactly what it owes: token balance == totalLocked() == sum owed by open tasks.
    function invariant_escrowBalanceEqualsOwed() public view {
        assertEq(token.balanceOf(address(escrow)), handler.ghost_owed(), "balance != owed by open tasks");
        assertEq(escrow.totalLocked(), handler.ghost_owed(), "totalLocked != owed by open tasks");
    }

    /// (b) No task pays out more than it locked: paid + fee + refund == escrowed once closed, <= while open.
    function invariant_noTaskPaysOutMoreThanLocked() public view {
        assertEq(handler.taskPayoutViolations(), 0);
    }

    /// (c) A provider is never paid twice for one task.
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

    function afterInvariant() public view {
        handler.callSummary();
    }
}
