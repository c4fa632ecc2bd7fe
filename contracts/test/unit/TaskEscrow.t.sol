// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {ITaskEscrow} from "../../src/interfaces/ITaskEscrow.sol";
import {IProviderRegistry} from "../../src/interfaces/IProviderRegistry.sol";
import {TaskEscrow} from "../../src/TaskEscrow.sol";
import {Fixture} from "../utils/Fixture.sol";

contract TaskEscrowTest is Fixture {
    // ------------------------------------------------------------------ post

    function test_postTask_locksEscrowAndEmits() public {
        uint256 escrowed = escrow.escrowFor(5, PRICE);
        assertEq(escrowed, 5 * PRICE + 5 * PRICE * FEE / 10_000);
        uint256 before = token.balanceOf(customer);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.TaskPosted(1, customer, SPEC, 3, 2, 5, PRICE, _deadline(), escrowed);
        uint256 id = _post(3, 2, 5);
        assertEq(id, 1);
        assertEq(escrow.taskCount(), 1);
        assertEq(token.balanceOf(customer), before - escrowed);
        assertEq(token.balanceOf(address(escrow)), escrowed);
        assertEq(escrow.totalLocked(), escrowed);
        ITaskEscrow.Task memory t = escrow.getTask(id);
        assertEq(t.customer, customer);
        assertEq(t.maxPricePerReplica, PRICE);
        assertEq(t.specHash, SPEC);
        assertEq(t.replicas, 3);
        assertEq(t.quorum, 2);
        assertEq(t.maxReplicas, 5);
        assertEq(t.feeBps, FEE);
        assertEq(uint8(t.state), uint8(ITaskEscrow.TaskState.Posted));
    }

    function test_postTaskWithPermit() public {
        (address payer, uint256 pk) = makeAddrAndKey("payer");
        token.transfer(payer, 1_000e18);
        uint256 value = escrow.escrowFor(3, PRICE);
        uint256 permitDeadline = block.timestamp + 1 hours;
        bytes32 digest = _permitDigest(payer, address(escrow), value, token.nonces(payer), permitDeadline);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        vm.prank(payer);
        uint256 id = escrow.postTaskWithPermit(SPEC, 3, 2, 3, PRICE, _deadline(), value, permitDeadline, v, r, s);
        assertEq(escrow.getTask(id).customer, payer);
        assertEq(token.balanceOf(address(escrow)), value);
        assertEq(token.allowance(payer, address(escrow)), 0);
    }

    function test_postTask_revertsOnBadTerms() public {
        vm.startPrank(customer);
        vm.expectRevert(ITaskEscrow.EscrowZeroSpecHash.selector);
        escrow.postTask(bytes32(0), 1, 1, 1, PRICE, _deadline());
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowInvalidReplication.selector, 3, 0, 3));
        escrow.postTask(SPEC, 3, 0, 3, PRICE, _deadline());
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowInvalidReplication.selector, 3, 4, 3));
        escrow.postTask(SPEC, 3, 4, 3, PRICE, _deadline());
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowInvalidReplication.selector, 4, 2, 3));
        escrow.postTask(SPEC, 4, 2, 3, PRICE, _deadline());
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowInvalidReplication.selector, 3, 2, 17));
        escrow.postTask(SPEC, 3, 2, 17, PRICE, _deadline());
        vm.expectRevert(ITaskEscrow.EscrowZeroPrice.selector);
        escrow.postTask(SPEC, 3, 2, 3, 0, _deadline());
        uint64 earliest = uint64(block.timestamp) + COMMIT_WINDOW + REVEAL_WINDOW;
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowDeadlineTooSoon.selector, earliest, earliest));
        escrow.postTask(SPEC, 3, 2, 3, PRICE, earliest);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ cancel

    function test_cancelTask_refundsAll() public {
        uint256 before = token.balanceOf(customer);
        uint256 id = _post(3, 2, 3);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.TaskCancelled(id, escrow.escrowFor(3, PRICE));
        vm.prank(customer);
        escrow.cancelTask(id);
        assertEq(token.balanceOf(customer), before);
        assertEq(escrow.totalLocked(), 0);
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Cancelled));
    }

    function test_cancelTask_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotFound.selector, 7));
        escrow.cancelTask(7);
        uint256 id = _post(3, 2, 3);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowNotCustomer.selector, id, matcher));
        vm.prank(matcher);
        escrow.cancelTask(id);
        _assign(id, _providers(0, 3));
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotInState.selector, id, ITaskEscrow.TaskState.Assigned)
        );
        vm.prank(customer);
        escrow.cancelTask(id);
    }

    // ------------------------------------------------------------------ assign

    function test_assign_locksProvidersAndOpensRound() public {
        uint256 id = _post(3, 2, 5);
        uint64 cd = uint64(block.timestamp) + COMMIT_WINDOW;
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.TaskAssigned(id, providers[0], 0, cd, cd + REVEAL_WINDOW);
        _assign(id, _providers(0, 3));
        ITaskEscrow.Task memory t = escrow.getTask(id);
        assertEq(uint8(t.state), uint8(ITaskEscrow.TaskState.Assigned));
        assertEq(t.assigned, 3);
        assertEq(t.commitDeadline, cd);
        assertEq(t.revealDeadline, cd + REVEAL_WINDOW);
        ITaskEscrow.Replica[] memory reps = escrow.getReplicas(id);
        assertEq(reps.length, 3);
        for (uint256 i; i < 3; ++i) {
            assertEq(reps[i].provider, providers[i]);
            assertEq(uint8(reps[i].state), uint8(ITaskEscrow.ReplicaState.Assigned));
            assertEq(registry.activeAssignments(providers[i]), 1);
        }
    }

    function test_assignMany() public {
        uint256 a = _post(1, 1, 1);
        uint256 b = _post(2, 1, 2);
        uint256[] memory ids = new uint256[](2);
        (ids[0], ids[1]) = (a, b);
        address[][] memory ps = new address[][](2);
        ps[0] = _providers(0, 1);
        ps[1] = _providers(1, 2);
        vm.prank(matcher);
        escrow.assignMany(ids, ps);
        assertEq(escrow.getTask(a).assigned, 1);
        assertEq(escrow.getTask(b).assigned, 2);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowBatchLengthMismatch.selector, 2, 1));
        vm.prank(matcher);
        escrow.assignMany(ids, new address[][](1));
    }

    function test_assign_reverts() public {
        address[] memory three = _providers(0, 3);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotFound.selector, 9));
        vm.prank(matcher);
        escrow.assign(9, three);

        uint256 id = _post(3, 2, 4);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, customer, escrow.MATCHER_ROLE())
        );
        vm.prank(customer);
        escrow.assign(id, three);

        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowWrongReplicaCount.selector, id, 2, 3));
        _assign(id, _providers(0, 2));

        address[] memory dup = _providers(0, 3);
        dup[2] = dup[0];
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowDuplicateProvider.selector, id, dup[0]));
        _assign(id, dup);

        address nobody = makeAddr("nobody");
        address[] memory unstaked = _providers(0, 3);
        unstaked[1] = nobody;
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowProviderNotStaked.selector, id, nobody));
        _assign(id, unstaked);

        _assign(id, three);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowDuplicateProvider.selector, id, providers[1]));
        _assign(id, _providers(1, 1));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTooManyReplicas.selector, id, 3, 2, 4));
        _assign(id, _providers(3, 2));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowWrongReplicaCount.selector, id, 0, 3));
        _assign(id, new address[](0));

        uint64 deadline = escrow.getTask(id).deadline;
        vm.warp(deadline - COMMIT_WINDOW - REVEAL_WINDOW);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowDeadlineTooSoon.selector, deadline, deadline));
        _assign(id, _providers(3, 1));
    }

    // ------------------------------------------------------------------ commit / reveal

    function test_commitAndReveal() public {
        uint256 id = _post(2, 2, 2);
        _assign(id, _providers(0, 2));
        bytes32 c = escrow.commitmentFor(RESULT, _salt(providers[0]), providers[0]);
        assertEq(c, keccak256(abi.encode(RESULT, _salt(providers[0]), providers[0])));
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.ResultCommitted(id, providers[0], c);
        _commit(id, providers[0], RESULT);
        assertEq(escrow.getReplicas(id)[0].commitment, c);
        _commit(id, providers[1], RESULT);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.ResultRevealed(id, providers[0], RESULT);
        _reveal(id, providers[0], RESULT);
        ITaskEscrow.Replica memory r = escrow.getReplicas(id)[0];
        assertEq(r.commitment, RESULT);
        assertEq(uint8(r.state), uint8(ITaskEscrow.ReplicaState.Revealed));
    }

    function test_commitMany_revealMany() public {
        uint256 a = _post(1, 1, 1);
        uint256 b = _post(1, 1, 1);
        _assign(a, _providers(0, 1));
        _assign(b, _providers(0, 1));
        uint256[] memory ids = new uint256[](2);
        (ids[0], ids[1]) = (a, b);
        bytes32[] memory cs = new bytes32[](2);
        bytes32[] memory rs = _same(2, RESULT);
        bytes32[] memory salts = new bytes32[](2);
        salts[0] = _salt(providers[0]);
        salts[1] = _salt(providers[0]);
        cs[0] = escrow.commitmentFor(RESULT, salts[0], providers[0]);
        cs[1] = cs[0];
        vm.startPrank(providers[0]);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowBatchLengthMismatch.selector, 2, 1));
        escrow.commitMany(ids, new bytes32[](1));
        escrow.commitMany(ids, cs);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowBatchLengthMismatch.selector, 2, 1));
        escrow.revealMany(ids, new bytes32[](1), salts);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowBatchLengthMismatch.selector, 2, 3));
        escrow.revealMany(ids, rs, new bytes32[](3));
        escrow.revealMany(ids, rs, salts);
        vm.stopPrank();
        assertEq(uint8(escrow.getReplicas(b)[0].state), uint8(ITaskEscrow.ReplicaState.Revealed));
    }

    function test_commit_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotFound.selector, 5));
        escrow.commit(5, RESULT);
        uint256 id = _post(2, 2, 3);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotInState.selector, id, ITaskEscrow.TaskState.Posted)
        );
        vm.prank(providers[0]);
        escrow.commit(id, RESULT);
        _assign(id, _providers(0, 2));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowNotAssigned.selector, id, providers[5]));
        vm.prank(providers[5]);
        escrow.commit(id, RESULT);
        _commit(id, providers[0], RESULT);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITaskEscrow.EscrowReplicaNotInState.selector, id, providers[0], ITaskEscrow.ReplicaState.Committed
            )
        );
        _commit(id, providers[0], RESULT);
        uint64 cd = escrow.getTask(id).commitDeadline;
        vm.warp(cd + 1);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowCommitWindowClosed.selector, id, cd, cd + 1));
        _commit(id, providers[1], RESULT);
        // a new round closes the old one for providers[1], who never committed
        _assign(id, _providers(2, 1));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowRoundClosed.selector, id, providers[1], 1, 2));
        _commit(id, providers[1], RESULT);
        _commit(id, providers[2], RESULT);
    }

    function test_reveal_reverts() public {
        uint256 id = _post(2, 2, 2);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotInState.selector, id, ITaskEscrow.TaskState.Posted)
        );
        _reveal(id, providers[0], RESULT);
        _assign(id, _providers(0, 2));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowNotAssigned.selector, id, providers[4]));
        _reveal(id, providers[4], RESULT);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITaskEscrow.EscrowReplicaNotInState.selector, id, providers[0], ITaskEscrow.ReplicaState.Assigned
            )
        );
        _reveal(id, providers[0], RESULT);
        _commit(id, providers[0], RESULT);
        uint64 cd = escrow.getTask(id).commitDeadline;
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowRevealNotOpen.selector, id, cd, uint64(block.timestamp))
        );
        _reveal(id, providers[0], RESULT);
        // the commit deadline passing opens reveals
        vm.warp(cd + 1);
        bytes32 expected = escrow.commitmentFor(RESULT, _salt(providers[0]), providers[0]);
        bytes32 computed = escrow.commitmentFor(OTHER, _salt(providers[0]), providers[0]);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowRevealMismatch.selector, id, providers[0], expected, computed)
        );
        _reveal(id, providers[0], OTHER);
        uint64 rd = escrow.getTask(id).revealDeadline;
        vm.warp(rd + 1);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowRevealWindowClosed.selector, id, rd, rd + 1));
        _reveal(id, providers[0], RESULT);
    }

    // ------------------------------------------------------------------ finalize

    function test_finalize_settlesPaysSlashesRefunds() public {
        bytes32[] memory rs = _same(3, RESULT);
        rs[2] = OTHER;
        uint256 custBefore = token.balanceOf(customer);
        uint256 id = _runToRevealed(rs, 2);
        uint96[] memory pay = _payments(3, 4e18);
        pay[2] = 0;
        uint256 stake2 = registry.stakeOf(providers[2]);
        uint256 slashed = stake2 * SLASH_DISSENT / 10_000;
        uint256 paid = 8e18;
        uint256 fee = paid * FEE / 10_000;
        uint256 refund = escrow.escrowFor(3, PRICE) - paid - fee;
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.TaskSettled(id, RESULT, 2, paid, fee, refund);
        _finalize(id, pay);
        assertEq(token.balanceOf(providers[0]), 4e18);
        assertEq(token.balanceOf(providers[1]), 4e18);
        assertEq(token.balanceOf(providers[2]), 0);
        assertEq(token.balanceOf(treasury), fee + slashed - slashed * CUSTOMER_SHARE / 10_000);
        assertEq(token.balanceOf(customer), custBefore - paid - fee + slashed * CUSTOMER_SHARE / 10_000);
        assertEq(registry.stakeOf(providers[2]), stake2 - slashed);
        assertEq(escrow.totalLocked(), 0);
        assertEq(token.balanceOf(address(escrow)), 0);
        ITaskEscrow.Task memory t = escrow.getTask(id);
        assertEq(uint8(t.state), uint8(ITaskEscrow.TaskState.Settled));
        assertEq(t.resultHash, RESULT);
        ITaskEscrow.Replica[] memory reps = escrow.getReplicas(id);
        assertEq(uint8(reps[0].state), uint8(ITaskEscrow.ReplicaState.Agreed));
        assertEq(uint8(reps[2].state), uint8(ITaskEscrow.ReplicaState.Dissented));
        for (uint256 i; i < 3; ++i) {
            assertEq(registry.activeAssignments(providers[i]), 0);
        }
    }

    function test_finalize_failsWithoutQuorumAndSlashesNoShows() public {
        uint256 id = _post(3, 2, 3);
        _assign(id, _providers(0, 3));
        _commit(id, providers[0], RESULT);
        _commit(id, providers[1], OTHER);
        uint64 cd = escrow.getTask(id).commitDeadline;
        vm.warp(cd + 1);
        _reveal(id, providers[0], RESULT);
        _reveal(id, providers[1], OTHER);
        // providers[2] never committed: once the commit window closed, all committed replicas revealed
        uint256 stake2 = registry.stakeOf(providers[2]);
        uint256 before = token.balanceOf(customer);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.ReplicaFinalized(id, providers[2], ITaskEscrow.ReplicaState.NoShow);
        _finalize(id, _payments(3, 0));
        uint256 slashed = stake2 * SLASH_NOSHOW / 10_000;
        assertEq(registry.stakeOf(providers[2]), stake2 - slashed);
        assertEq(
            token.balanceOf(customer), before + escrow.escrowFor(3, PRICE) + slashed * CUSTOMER_SHARE / 10_000
        );
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Failed));
        assertEq(uint8(escrow.getReplicas(id)[0].state), uint8(ITaskEscrow.ReplicaState.Released));
        assertEq(escrow.getTask(id).resultHash, bytes32(0));
    }

    function test_finalize_tieIsNoQuorum() public {
        bytes32[] memory rs = new bytes32[](2);
        (rs[0], rs[1]) = (RESULT, OTHER);
        uint256 id = _runToRevealed(rs, 1);
        _finalize(id, _payments(2, 0));
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Failed));
    }

    function test_finalize_escalationRound() public {
        bytes32[] memory rs = new bytes32[](2);
        (rs[0], rs[1]) = (RESULT, OTHER);
        uint256 id = _post(2, 2, 3);
        _assign(id, _providers(0, 2));
        _commit(id, providers[0], RESULT);
        _commit(id, providers[1], OTHER);
        _reveal(id, providers[0], RESULT);
        _reveal(id, providers[1], OTHER);
        _assign(id, _providers(2, 1));
        _commit(id, providers[2], RESULT);
        _reveal(id, providers[2], RESULT);
        uint96[] memory pay = _payments(3, PRICE);
        pay[1] = 0;
        _finalize(id, pay);
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Settled));
        assertEq(token.balanceOf(providers[2]), PRICE);
        assertEq(uint8(escrow.getReplicas(id)[1].state), uint8(ITaskEscrow.ReplicaState.Dissented));
    }

    function test_finalizeMany() public {
        uint256 a = _runToRevealed(_same(1, RESULT), 1);
        uint256 b = _runToRevealed(_same(1, RESULT), 1);
        uint256[] memory ids = new uint256[](2);
        (ids[0], ids[1]) = (a, b);
        uint96[][] memory pays = new uint96[][](2);
        pays[0] = _payments(1, PRICE);
        pays[1] = _payments(1, 1e18);
        vm.prank(settler);
        escrow.finalizeMany(ids, pays);
        assertEq(token.balanceOf(providers[0]), PRICE + 1e18);
        assertEq(token.balanceOf(treasury), (uint256(PRICE) * FEE / 10_000) + (uint256(1e18) * FEE / 10_000));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowBatchLengthMismatch.selector, 2, 0));
        vm.prank(settler);
        escrow.finalizeMany(ids, new uint96[][](0));
    }

    function test_finalize_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotFound.selector, 3));
        _finalize(3, _payments(0, 0));
        bytes32[] memory rs = _same(3, RESULT);
        rs[2] = OTHER;
        uint256 id = _post(3, 2, 3);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, customer, escrow.SETTLER_ROLE())
        );
        vm.prank(customer);
        escrow.finalize(id, _payments(3, 0));
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotInState.selector, id, ITaskEscrow.TaskState.Posted)
        );
        _finalize(id, _payments(3, 0));
        _assign(id, _providers(0, 3));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowPaymentsLength.selector, id, 2, 3));
        _finalize(id, _payments(2, 0));
        uint64 rd = escrow.getTask(id).revealDeadline;
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowRevealsPending.selector, id, rd, uint64(block.timestamp))
        );
        _finalize(id, _payments(3, 0));
        for (uint256 i; i < 3; ++i) {
            _commit(id, providers[i], rs[i]);
        }
        _reveal(id, providers[0], rs[0]);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowRevealsPending.selector, id, rd, uint64(block.timestamp))
        );
        _finalize(id, _payments(3, 0));
        _reveal(id, providers[1], rs[1]);
        _reveal(id, providers[2], rs[2]);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowPaymentAboveCap.selector, id, 1, PRICE + 1, PRICE));
        uint96[] memory pay = _payments(3, 0);
        pay[1] = PRICE + 1;
        _finalize(id, pay);
        pay[1] = 0;
        pay[2] = 1;
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowPaymentToNonAgreeing.selector, id, 2, 1));
        _finalize(id, pay);
    }

    function test_finalize_afterRevealDeadlineSlashesUnrevealed() public {
        uint256 id = _post(2, 1, 2);
        _assign(id, _providers(0, 2));
        _commit(id, providers[0], RESULT);
        _commit(id, providers[1], RESULT);
        _reveal(id, providers[0], RESULT);
        vm.warp(escrow.getTask(id).revealDeadline + 1);
        _finalize(id, _payments(2, 0));
        assertEq(uint8(escrow.getReplicas(id)[1].state), uint8(ITaskEscrow.ReplicaState.NoShow));
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Settled));
    }

    // ------------------------------------------------------------------ expire

    function test_expire_postedAndAssigned() public {
        uint256 before = token.balanceOf(customer);
        uint256 a = _post(1, 1, 1);
        uint256 b = _post(2, 1, 2);
        _assign(b, _providers(0, 2));
        _commit(b, providers[0], RESULT);
        uint64 expiresAt = escrow.getTask(a).deadline + GRACE;
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowNotExpired.selector, a, expiresAt, uint64(block.timestamp))
        );
        escrow.expire(a);
        vm.warp(expiresAt);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.TaskExpired(a, escrow.escrowFor(1, PRICE));
        escrow.expire(a);
        escrow.expire(b);
        assertEq(token.balanceOf(customer), before);
        assertEq(escrow.totalLocked(), 0);
        assertEq(registry.activeAssignments(providers[0]), 0);
        assertEq(uint8(escrow.getReplicas(b)[0].state), uint8(ITaskEscrow.ReplicaState.Released));
        assertEq(uint8(escrow.getTask(b).state), uint8(ITaskEscrow.TaskState.Expired));
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotInState.selector, a, ITaskEscrow.TaskState.Expired)
        );
        escrow.expire(a);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotFound.selector, 99));
        escrow.expire(99);
    }

    // ------------------------------------------------------------------ governance

    function test_setters() public {
        vm.startPrank(admin);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.EscrowParameterChanged("protocolFeeBps", FEE, 100);
        escrow.setProtocolFeeBps(100);
        escrow.setCommitWindow(2 hours);
        escrow.setRevealWindow(3 hours);
        escrow.setExpiryGrace(0);
        escrow.setSlashDissentBps(10_000);
        escrow.setSlashNoShowBps(0);
        address t2 = makeAddr("t2");
        escrow.setTreasury(t2);
        vm.stopPrank();
        assertEq(escrow.protocolFeeBps(), 100);
        assertEq(escrow.commitWindow(), 2 hours);
        assertEq(escrow.revealWindow(), 3 hours);
        assertEq(escrow.expiryGrace(), 0);
        assertEq(escrow.slashDissentBps(), 10_000);
        assertEq(escrow.slashNoShowBps(), 0);
        assertEq(escrow.treasury(), t2);
        assertEq(address(escrow.token()), address(token));
        assertEq(address(escrow.registry()), address(registry));
    }

    function test_setters_revertOutOfRange() public {
        vm.startPrank(admin);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowParameterOutOfRange.selector, bytes32("protocolFeeBps"), 1001));
        escrow.setProtocolFeeBps(1001);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowParameterOutOfRange.selector, bytes32("commitWindow"), 0));
        escrow.setCommitWindow(0);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowParameterOutOfRange.selector, bytes32("revealWindow"), 31 days)
        );
        escrow.setRevealWindow(31 days);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowParameterOutOfRange.selector, bytes32("expiryGrace"), 31 days)
        );
        escrow.setExpiryGrace(31 days);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowParameterOutOfRange.selector, bytes32("slashDissentBps"), 10_001)
        );
        escrow.setSlashDissentBps(10_001);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowParameterOutOfRange.selector, bytes32("slashNoShowBps"), 10_001)
        );
        escrow.setSlashNoShowBps(10_001);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowParameterOutOfRange.selector, bytes32("treasury"), 0));
        escrow.setTreasury(address(0));
        vm.stopPrank();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, customer, bytes32(0))
        );
        vm.prank(customer);
        escrow.setProtocolFeeBps(1);
    }

    function test_feeIsFixedAtPost() public {
        uint256 id = _runToRevealed(_same(1, RESULT), 1);
        vm.prank(admin);
        escrow.setProtocolFeeBps(1_000);
        _finalize(id, _payments(1, PRICE));
        assertEq(token.balanceOf(treasury), PRICE * FEE / 10_000);
    }

    // ------------------------------------------------------------------ helpers

    function _permitDigest(address owner, address spender, uint256 value, uint256 nonce, uint256 deadline)
        internal
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                owner,
                spender,
                value,
                nonce,
                deadline
            )
        );
        return keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
    }
}
