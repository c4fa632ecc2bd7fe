// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ITaskEscrow} from "../../src/interfaces/ITaskEscrow.sol";
import {Fixture} from "../utils/Fixture.sol";

/// @dev Fuzzed posts, payments and slash rates: amounts are conserved and payments never exceed their cap.
contract EscrowFuzzTest is Fixture {
    function _holders() internal view returns (address[] memory hs) {
        hs = new address[](providers.length + 4);
        for (uint256 i; i < providers.length; ++i) {
            hs[i] = providers[i];
        }
        hs[providers.length] = customer;
        hs[providers.length + 1] = treasury;
        hs[providers.length + 2] = address(escrow);
        hs[providers.length + 3] = address(registry);
    }

    function _sum(address[] memory hs) internal view returns (uint256 s) {
        for (uint256 i; i < hs.length; ++i) {
            s += token.balanceOf(hs[i]);
        }
    }

    struct Case {
        uint8 k;
        uint8 maxK;
        uint96 price;
        uint16 fee;
        uint8 dissenters;
        uint256 id;
        uint256 paid;
    }

    function testFuzz_settle_conservesAndCaps(
        uint8 k,
        uint8 extra,
        uint96 price,
        uint16 fee,
        uint256 paySeed,
        uint8 dissenters,
        uint16 dissentBps
    ) public {
        Case memory c;
        c.k = uint8(bound(k, 1, 6));
        c.maxK = uint8(bound(uint256(c.k) + extra, c.k, 8));
        c.price = uint96(bound(price, 1, 1_000e18));
        c.fee = uint16(bound(fee, 0, 1_000));
        c.dissenters = uint8(bound(dissenters, 0, (c.k - 1) / 2));
        vm.startPrank(admin);
        escrow.setProtocolFeeBps(c.fee);
        escrow.setSlashDissentBps(uint16(bound(dissentBps, 0, 10_000)));
        vm.stopPrank();
        address[] memory hs = _holders();
        uint256 before = _sum(hs);
        uint256 custBefore = token.balanceOf(customer);

        _postAndReveal(c);
        uint96[] memory pay = new uint96[](c.k);
        for (uint256 i = c.dissenters; i < c.k; ++i) {
            pay[i] = uint96(bound(uint256(keccak256(abi.encode(paySeed, i))), 0, c.price));
            c.paid += pay[i];
        }
        uint256[] memory provBefore = new uint256[](c.k);
        for (uint256 i; i < c.k; ++i) {
            provBefore[i] = token.balanceOf(providers[i]);
        }
        _finalize(c.id, pay);

        assertEq(_sum(hs), before, "tokens created or destroyed");
        assertEq(token.balanceOf(address(escrow)), 0);
        assertEq(escrow.totalLocked(), 0);
        for (uint256 i = c.dissenters; i < c.k; ++i) {
            assertEq(token.balanceOf(providers[i]) - provBefore[i], pay[i]);
            assertLe(pay[i], c.price);
        }
        // the customer paid exactly what providers earned plus the fee on it, and got slash shares back
        uint256 custSlash = token.balanceOf(customer) + c.paid + c.paid * c.fee / 10_000 - custBefore;
        assertLe(custSlash, uint256(c.dissenters) * 1_000e18);
        assertEq(uint8(escrow.getTask(c.id).state), uint8(ITaskEscrow.TaskState.Settled));
    }

    function _postAndReveal(Case memory c) internal {
        vm.prank(customer);
        c.id = escrow.postTask(SPEC, c.k, c.k - c.dissenters, c.maxK, c.price, _deadline());
        uint256 base = uint256(c.maxK) * c.price;
        assertEq(escrow.escrowFor(c.maxK, c.price), base + base * c.fee / 10_000);
        _assign(c.id, _providers(0, c.k));
        for (uint256 i; i < c.k; ++i) {
            _commit(c.id, providers[i], i < c.dissenters ? OTHER : RESULT);
        }
        for (uint256 i; i < c.k; ++i) {
            _reveal(c.id, providers[i], i < c.dissenters ? OTHER : RESULT);
        }
    }

    function testFuzz_paymentAboveCapReverts(uint96 price, uint96 amount) public {
        price = uint96(bound(price, 1, 1_000e18));
        amount = uint96(bound(amount, uint256(price) + 1, type(uint96).max));
        vm.prank(customer);
        uint256 id = escrow.postTask(SPEC, 1, 1, 1, price, _deadline());
        _assign(id, _providers(0, 1));
        _commit(id, providers[0], RESULT);
        _reveal(id, providers[0], RESULT);
        uint96[] memory pay = _payments(1, amount);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowPaymentAboveCap.selector, id, 0, amount, price));
        _finalize(id, pay);
    }

    function testFuzz_cancelAndExpireRefundExactly(uint8 maxK, uint96 price, uint16 fee, bool viaExpire) public {
        maxK = uint8(bound(maxK, 1, 16));
        price = uint96(bound(price, 1, 5_000_000e18));
        fee = uint16(bound(fee, 0, 1_000));
        vm.prank(admin);
        escrow.setProtocolFeeBps(fee);
        token.transfer(customer, escrow.escrowFor(maxK, price));
        uint256 before = token.balanceOf(customer);
        vm.prank(customer);
        uint256 id = escrow.postTask(SPEC, 1, 1, maxK, price, _deadline());
        assertEq(before - token.balanceOf(customer), escrow.escrowFor(maxK, price));
        if (viaExpire) {
            vm.warp(uint256(escrow.getTask(id).deadline) + GRACE);
            escrow.expire(id);
        } else {
            vm.prank(customer);
            escrow.cancelTask(id);
        }
        assertEq(token.balanceOf(customer), before);
        assertEq(token.balanceOf(address(escrow)), 0);
    }

    function testFuzz_slash_conserves(uint256 active, uint256 unbonding, uint16 bps, uint16 share) public {
        active = bound(active, 0, 1_000_000e18);
        unbonding = bound(unbonding, 0, 1_000_000e18);
        bps = uint16(bound(bps, 0, 10_000));
        share = uint16(bound(share, 0, 10_000));
        vm.prank(admin);
        registry.setSlashCustomerShareBps(share);
        address p = makeAddr("fuzzProvider");
        if (active + unbonding != 0) _stake(p, active + unbonding);
        if (unbonding != 0) {
            vm.prank(p);
            registry.requestUnstake(unbonding);
        }
        uint256 custBefore = token.balanceOf(customer);
        uint256 treasBefore = token.balanceOf(treasury);
        vm.prank(address(escrow));
        uint256 slashed = registry.slash(p, 1, bps, customer);
        assertEq(slashed, (active + unbonding) * bps / 10_000);
        uint256 toCustomer = token.balanceOf(customer) - custBefore;
        assertEq(toCustomer, slashed * share / 10_000);
        assertEq(toCustomer + token.balanceOf(treasury) - treasBefore, slashed);
        (uint256 unbondingAfter,) = registry.unbondingOf(p);
        assertEq(registry.stakeOf(p) + unbondingAfter, active + unbonding - slashed);
        // active stake goes first
        if (slashed <= active) assertEq(unbondingAfter, unbonding);
        assertEq(token.balanceOf(address(registry)), registry.totalStaked() + registry.totalUnbonding());
    }
}
