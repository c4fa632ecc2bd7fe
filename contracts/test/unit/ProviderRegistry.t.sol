// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IProviderRegistry} from "../../src/interfaces/IProviderRegistry.sol";
import {ProviderRegistry} from "../../src/ProviderRegistry.sol";
import {Fixture} from "../utils/Fixture.sol";

contract ProviderRegistryTest is Fixture {
    address internal alice = makeAddr("alice");

    function test_register() public {
        vm.expectEmit(address(registry));
        emit IProviderRegistry.ProviderRegistered(alice, alice, bytes32("caps"), "ipfs://caps");
        vm.prank(alice);
        registry.register(address(0), bytes32("caps"), "ipfs://caps");
        assertEq(registry.operatorOf(alice), alice);
        (bytes32 h, string memory uri) = registry.capabilitiesOf(alice);
        assertEq(h, bytes32("caps"));
        assertEq(uri, "ipfs://caps");
        vm.prank(alice);
        registry.register(matcher, bytes32("caps2"), "u2");
        assertEq(registry.operatorOf(alice), matcher);
    }

    function test_stake_andEligibility() public {
        uint256 totalBefore = registry.totalStaked();
        token.transfer(alice, 500e18);
        vm.startPrank(alice);
        token.approve(address(registry), 500e18);
        vm.expectEmit(address(registry));
        emit IProviderRegistry.Staked(alice, 50e18, 50e18);
        registry.stake(50e18);
        assertFalse(registry.isEligible(alice));
        registry.stake(50e18);
        vm.stopPrank();
        assertTrue(registry.isEligible(alice));
        assertEq(registry.stakeOf(alice), 100e18);
        assertEq(registry.totalStaked(), totalBefore + 100e18);
        assertEq(token.balanceOf(address(registry)), registry.totalStaked() + registry.totalUnbonding());
    }

    function test_stakeWithPermit() public {
        (address p, uint256 pk) = makeAddrAndKey("permitProvider");
        token.transfer(p, 200e18);
        uint256 deadline = block.timestamp + 1 hours;
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                p,
                address(registry),
                200e18,
                token.nonces(p),
                deadline
            )
        );
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(pk, keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash)));
        vm.prank(p);
        registry.stakeWithPermit(200e18, deadline, v, r, s);
        assertEq(registry.stakeOf(p), 200e18);
    }

    function test_unstakeAndWithdraw() public {
        address p = providers[0];
        vm.expectEmit(address(registry));
        emit IProviderRegistry.UnstakeRequested(p, 400e18, uint64(block.timestamp) + UNBONDING);
        vm.prank(p);
        registry.requestUnstake(400e18);
        (uint256 amount, uint64 release) = registry.unbondingOf(p);
        assertEq(amount, 400e18);
        assertEq(release, uint64(block.timestamp) + UNBONDING);
        assertEq(registry.stakeOf(p), 600e18);
        assertEq(registry.totalUnbonding(), 400e18);
        vm.expectRevert(
            abi.encodeWithSelector(
                IProviderRegistry.RegistryUnbondingNotReleased.selector, p, release, uint64(block.timestamp)
            )
        );
        vm.prank(p);
        registry.withdraw();
        vm.warp(release);
        vm.expectEmit(address(registry));
        emit IProviderRegistry.Withdrawn(p, 400e18);
        vm.prank(p);
        registry.withdraw();
        assertEq(token.balanceOf(p), 400e18);
        assertEq(registry.totalUnbonding(), 0);
        vm.expectRevert(abi.encodeWithSelector(IProviderRegistry.RegistryNothingUnbonding.selector, p));
        vm.prank(p);
        registry.withdraw();
    }

    function test_stakeAndUnstake_revert() public {
        vm.expectRevert(IProviderRegistry.RegistryZeroAmount.selector);
        registry.stake(0);
        vm.expectRevert(IProviderRegistry.RegistryZeroAmount.selector);
        registry.requestUnstake(0);
        vm.expectRevert(
            abi.encodeWithSelector(IProviderRegistry.RegistryInsufficientStake.selector, providers[0], 1_001e18, 1_000e18)
        );
        vm.prank(providers[0]);
        registry.requestUnstake(1_001e18);
        vm.prank(address(escrow));
        assertTrue(registry.lockForTask(providers[0]));
        assertEq(registry.activeAssignments(providers[0]), 1);
        vm.expectRevert(abi.encodeWithSelector(IProviderRegistry.RegistryStakeLocked.selector, providers[0], 1));
        vm.prank(providers[0]);
        registry.requestUnstake(1e18);
    }

    function test_escrowOnly() public {
        address[] memory one = new address[](1);
        one[0] = providers[0];
        vm.startPrank(alice);
        vm.expectRevert(abi.encodeWithSelector(IProviderRegistry.RegistryCallerNotEscrow.selector, alice));
        registry.lockForTask(providers[0]);
        vm.expectRevert(abi.encodeWithSelector(IProviderRegistry.RegistryCallerNotEscrow.selector, alice));
        registry.lockForTasks(one);
        vm.expectRevert(abi.encodeWithSelector(IProviderRegistry.RegistryCallerNotEscrow.selector, alice));
        registry.unlockForTasks(one);
        vm.expectRevert(abi.encodeWithSelector(IProviderRegistry.RegistryCallerNotEscrow.selector, alice));
        registry.slash(providers[0], 1, 100);
        vm.stopPrank();
        vm.startPrank(address(escrow));
        vm.expectRevert(
            abi.encodeWithSelector(IProviderRegistry.RegistryParameterOutOfRange.selector, bytes32("slashBps"), 10_001)
        );
        registry.slash(providers[0], 1, 10_001);
        vm.stopPrank();
    }

    function test_lockForTask_returnsFalseBelowMinimum() public {
        vm.startPrank(address(escrow));
        assertFalse(registry.lockForTask(alice));
        assertEq(registry.activeAssignments(alice), 0);
        assertTrue(registry.lockForTask(providers[0]));
        assertEq(registry.activeAssignments(providers[0]), 1);
        vm.stopPrank();
    }

    function test_lockForTasks_countsRepeatsAndUnlocks() public {
        // 3 providers, repeated as an assign batch repeats them
        address[] memory batch = new address[](9);
        for (uint256 i; i < 9; ++i) {
            batch[i] = providers[i % 3];
        }
        vm.startPrank(address(escrow));
        assertEq(registry.lockForTasks(batch), 9);
        for (uint256 i; i < 3; ++i) {
            assertEq(registry.activeAssignments(providers[i]), 3);
        }
        registry.unlockForTasks(batch);
        for (uint256 i; i < 3; ++i) {
            assertEq(registry.activeAssignments(providers[i]), 0);
        }
        vm.stopPrank();
    }

    function test_lockForTasks_manyProvidersShareTableEntries() public {
        // 40 distinct stakers: more than the 16 table entries, so entries are flushed and reused
        address[] memory many = new address[](80);
        for (uint256 i; i < 40; ++i) {
            address p = makeAddr(string.concat("staker", vm.toString(i)));
            _stake(p, MIN_STAKE);
            many[i] = p;
            many[79 - i] = p;
        }
        vm.startPrank(address(escrow));
        assertEq(registry.lockForTasks(many), 80);
        for (uint256 i; i < 40; ++i) {
            assertEq(registry.activeAssignments(many[i]), 2);
        }
        registry.unlockForTasks(many);
        for (uint256 i; i < 40; ++i) {
            assertEq(registry.activeAssignments(many[i]), 0);
        }
        vm.stopPrank();
    }

    function test_lockForTasks_ineligibleLocksNothing() public {
        address[] memory batch = new address[](4);
        (batch[0], batch[1], batch[2], batch[3]) = (providers[0], providers[1], alice, providers[0]);
        vm.startPrank(address(escrow));
        assertEq(registry.lockForTasks(batch), 2);
        assertEq(registry.activeAssignments(providers[0]), 0);
        assertEq(registry.activeAssignments(providers[1]), 0);
        address[] memory zero = new address[](1);
        assertEq(registry.lockForTasks(zero), 0, "address 0 has no stake");
        vm.stopPrank();
    }

    function test_unlockForTasks_revertsWhenNotLocked() public {
        address[] memory twice = new address[](2);
        (twice[0], twice[1]) = (providers[0], providers[0]);
        address[] memory once = new address[](1);
        once[0] = providers[0];
        vm.startPrank(address(escrow));
        registry.lockForTasks(once);
        vm.expectRevert(abi.encodeWithSelector(IProviderRegistry.RegistryNotLocked.selector, providers[0]));
        registry.unlockForTasks(twice);
        address[] memory zero = new address[](1);
        vm.expectRevert(abi.encodeWithSelector(IProviderRegistry.RegistryNotLocked.selector, address(0)));
        registry.unlockForTasks(zero);
        registry.unlockForTasks(once);
        vm.stopPrank();
        assertEq(registry.activeAssignments(providers[0]), 0);
    }

    function test_slash_activeThenUnbonding() public {
        address p = providers[0];
        vm.prank(p);
        registry.requestUnstake(900e18); // 100 active, 900 unbonding
        vm.expectEmit(address(registry));
        emit IProviderRegistry.Slashed(p, 7, 500e18, treasury);
        uint256 customerBefore = token.balanceOf(customer);
        vm.recordLogs();
        vm.prank(address(escrow));
        uint256 slashed = registry.slash(p, 7, 5_000); // half of 1000
        assertEq(vm.getRecordedLogs().length, 2, "one Slashed and one Transfer: nothing else");
        assertEq(slashed, 500e18);
        assertEq(registry.stakeOf(p), 0);
        (uint256 unbonding,) = registry.unbondingOf(p);
        assertEq(unbonding, 500e18);
        assertEq(token.balanceOf(treasury), 500e18, "the whole slash goes to the treasury");
        assertEq(token.balanceOf(customer), customerBefore, "the customer gets none of it");
        assertEq(token.balanceOf(address(registry)), registry.totalStaked() + registry.totalUnbonding());
        vm.prank(address(escrow));
        assertEq(registry.slash(alice, 7, 5_000), 0);
    }

    function test_governance() public {
        vm.startPrank(admin);
        vm.expectRevert(abi.encodeWithSelector(IProviderRegistry.RegistryEscrowAlreadySet.selector, address(escrow)));
        registry.setEscrow(alice);
        vm.expectEmit(address(registry));
        emit IProviderRegistry.RegistryParameterChanged("minStake", MIN_STAKE, 5e18);
        registry.setMinStake(5e18);
        registry.setUnbondingDelay(1 days);
        registry.setTreasury(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IProviderRegistry.RegistryParameterOutOfRange.selector, bytes32("minStake"), 0)
        );
        registry.setMinStake(0);
        vm.expectRevert(
            abi.encodeWithSelector(
                IProviderRegistry.RegistryParameterOutOfRange.selector, bytes32("unbondingDelay"), 366 days
            )
        );
        registry.setUnbondingDelay(366 days);
        vm.expectRevert(
            abi.encodeWithSelector(IProviderRegistry.RegistryParameterOutOfRange.selector, bytes32("treasury"), 0)
        );
        registry.setTreasury(address(0));
        vm.stopPrank();
        assertEq(registry.minStake(), 5e18);
        assertEq(registry.unbondingDelay(), 1 days);
        assertEq(registry.treasury(), alice);
        assertEq(registry.escrow(), address(escrow));
        assertEq(address(registry.token()), address(token));
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, bytes32(0))
        );
        vm.prank(alice);
        registry.setMinStake(1);
    }

    function test_setEscrow_onceAndNonZero() public {
        ProviderRegistry fresh = new ProviderRegistry(IERC20(address(token)), admin, treasury, 1, 0);
        vm.startPrank(admin);
        vm.expectRevert(
            abi.encodeWithSelector(IProviderRegistry.RegistryParameterOutOfRange.selector, bytes32("escrow"), 0)
        );
        fresh.setEscrow(address(0));
        fresh.setEscrow(alice);
        vm.expectRevert(abi.encodeWithSelector(IProviderRegistry.RegistryEscrowAlreadySet.selector, alice));
        fresh.setEscrow(matcher);
        vm.stopPrank();
    }
}
