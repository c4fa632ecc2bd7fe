// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ITaskEscrow} from "../../src/interfaces/ITaskEscrow.sol";
import {Fixture} from "../utils/Fixture.sol";

/// @dev Fuzzed posts, payments, reports and slash rates: amounts are conserved (credits, then claims), payments never
/// exceed their cap, reports must be complete and sorted.
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
        _finalize(c.id, _report(_providers(0, c.k), _results(c), pay));

        assertEq(_sum(hs), before, "tokens created or destroyed");
        assertEq(escrow.totalLocked(), 0);
        assertEq(token.balanceOf(address(escrow)), escrow.totalClaimable(), "escrow holds exactly the credits");
        for (uint256 i = c.dissenters; i < c.k; ++i) {
            assertEq(escrow.claimable(providers[i]), pay[i]);
            assertLe(pay[i], c.price);
        }
        // every credit is claimable, and claiming empties the escrow
        for (uint256 i; i < c.k; ++i) {
            _claim(providers[i]);
            assertEq(token.balanceOf(providers[i]) - provBefore[i], i < c.dissenters ? 0 : pay[i]);
        }
        _claim(customer);
        _claim(treasury);
        assertEq(token.balanceOf(address(escrow)), 0);
        assertEq(escrow.totalClaimable(), 0);
        assertEq(_sum(hs), before, "tokens created or destroyed");
        // the customer paid exactly what providers earned plus the fee on it: its refund is the rest of its escrow
        // and no slash reaches it
        assertEq(token.balanceOf(customer), custBefore - c.paid - c.paid * c.fee / 10_000, "customer paid or gained");
        assertEq(uint8(escrow.getTask(c.id).state), uint8(ITaskEscrow.TaskState.Settled));
    }

    function _results(Case memory c) internal pure returns (bytes32[] memory rs) {
        rs = new bytes32[](c.k);
        for (uint256 i; i < c.k; ++i) {
            rs[i] = i < c.dissenters ? OTHER : RESULT;
        }
    }

    function _postAndReveal(Case memory c) internal {
        vm.prank(customer);
        c.id = escrow.postTask(
            ITaskEscrow.TaskTerms({
                specHash: SPEC,
                replicas: c.k,
                quorum: c.k - c.dissenters,
                maxReplicas: c.maxK,
                maxPricePerReplica: c.price,
                deadline: _deadline()
            })
        );
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
        uint256 id = _postOne(1, 1, price);
        _assign(id, _providers(0, 1));
        _commit(id, providers[0], RESULT);
        _reveal(id, providers[0], RESULT);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowPaymentAboveCap.selector, id, providers[0], amount, price)
        );
        _finalize(id, _report(_providers(0, 1), _same(1, RESULT), _payments(1, amount)));
    }

    /// @dev Any order of a task's replicas but the ascending one is refused, naming the first out-of-order entry.
    function testFuzz_reportMustBeSorted(uint256 seed, uint8 k) public {
        k = uint8(bound(k, 2, 6));
        bytes32[] memory rs = _same(k, RESULT);
        uint256 id = _runToRevealed(rs, k);
        ITaskEscrow.ReplicaReport[] memory reports = _report(_providers(0, k), rs, _payments(k, 1));
        // Fisher-Yates with the seed
        for (uint256 i = k - 1; i > 0; --i) {
            uint256 j = uint256(keccak256(abi.encode(seed, i))) % (i + 1);
            (reports[i], reports[j]) = (reports[j], reports[i]);
        }
        uint256 firstBad = type(uint256).max;
        for (uint256 i = 1; i < k; ++i) {
            if (reports[i].provider <= reports[i - 1].provider) {
                firstBad = i;
                break;
            }
        }
        if (firstBad != type(uint256).max) {
            vm.expectRevert(
                abi.encodeWithSelector(ITaskEscrow.EscrowReportUnsorted.selector, id, reports[firstBad].provider)
            );
        }
        _finalize(id, reports);
    }

    /// @dev Only the low 248 bits of a commitment and of a revealed hash are stored and compared.
    function testFuzz_storesLow248Bits(bytes32 result, bytes32 salt) public {
        uint256 id = _postOne(1, 1, PRICE);
        _assign(id, _providers(0, 1));
        address p = providers[0];
        bytes32 c = escrow.commitmentFor(result, salt, p);
        vm.prank(p);
        escrow.commit(id, c);
        (, bytes32 payload) = escrow.replicaOf(id, p);
        assertEq(payload, bytes32(uint256(c) & ((1 << 248) - 1)));
        vm.prank(p);
        escrow.reveal(id, result, salt);
        (, payload) = escrow.replicaOf(id, p);
        assertEq(payload, bytes32(uint256(result) & ((1 << 248) - 1)));
        // the report's hash is checked on those bits too
        bytes32[] memory rs = _same(1, result ^ bytes32(uint256(1)));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowReportHashMismatch.selector, id, p, rs[0]));
        _finalize(id, _report(_providers(0, 1), rs, _payments(1, 0)));
        _finalize(id, _report(_providers(0, 1), _same(1, result), _payments(1, 1)));
        assertEq(escrow.claimable(p), 1);
    }

    function _postOne(uint8 k, uint8 maxK, uint96 price) internal returns (uint256 id) {
        ITaskEscrow.TaskTerms memory t = _terms(k, k, maxK);
        t.maxPricePerReplica = price;
        vm.prank(customer);
        id = escrow.postTask(t);
    }

    function testFuzz_cancelAndExpireRefundExactly(uint8 maxK, uint96 price, uint16 fee, bool viaExpire) public {
        maxK = uint8(bound(maxK, 1, 16));
        price = uint96(bound(price, 1, 5_000_000e18));
        fee = uint16(bound(fee, 0, 1_000));
        vm.prank(admin);
        escrow.setProtocolFeeBps(fee);
        token.transfer(customer, escrow.escrowFor(maxK, price));
        uint256 before = token.balanceOf(customer);
        uint256 id = _postOne(1, maxK, price);
        assertEq(before - token.balanceOf(customer), escrow.escrowFor(maxK, price));
        if (viaExpire) {
            vm.warp(uint256(escrow.getTask(id).deadline) + GRACE);
            escrow.expire(id, new address[](0));
        } else {
            vm.prank(customer);
            escrow.cancelTask(id);
        }
        assertEq(escrow.claimable(customer), escrow.escrowFor(maxK, price));
        assertEq(escrow.totalLocked(), 0);
        assertEq(escrow.claimFor(customer), escrow.escrowFor(maxK, price));
        assertEq(token.balanceOf(customer), before);
        assertEq(token.balanceOf(address(escrow)), 0);
    }

    function testFuzz_slash_conservesAndGoesToTreasury(uint256 active, uint256 unbonding, uint16 bps) public {
        active = bound(active, 0, 1_000_000e18);
        unbonding = bound(unbonding, 0, 1_000_000e18);
        bps = uint16(bound(bps, 0, 10_000));
        address p = makeAddr("fuzzProvider");
        if (active + unbonding != 0) _stake(p, active + unbonding);
        if (unbonding != 0) {
            vm.prank(p);
            registry.requestUnstake(unbonding);
        }
        uint256 custBefore = token.balanceOf(customer);
        uint256 treasBefore = token.balanceOf(treasury);
        vm.prank(address(escrow));
        uint256 slashed = registry.slash(p, 1, bps);
        assertEq(slashed, (active + unbonding) * bps / 10_000);
        assertEq(token.balanceOf(customer), custBefore, "the customer never receives a slash");
        assertEq(token.balanceOf(treasury) - treasBefore, slashed, "all of it reaches the treasury");
        (uint256 unbondingAfter,) = registry.unbondingOf(p);
        assertEq(registry.stakeOf(p) + unbondingAfter, active + unbonding - slashed);
        // active stake goes first
        if (slashed <= active) assertEq(unbondingAfter, unbonding);
        assertEq(token.balanceOf(address(registry)), registry.totalStaked() + registry.totalUnbonding());
    }
}
