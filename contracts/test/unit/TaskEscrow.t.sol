// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {ITaskEscrow} from "../../src/interfaces/ITaskEscrow.sol";
import {Fixture} from "../utils/Fixture.sol";

/// @dev Every entry point of TaskEscrow v2: its happy path, its events, and each custom error with exact values.
contract TaskEscrowTest is Fixture {
    uint256 internal constant PAYLOAD = (1 << 248) - 1;

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
        assertEq(escrow.totalClaimable(), 0);
        ITaskEscrow.Task memory t = escrow.getTask(id);
        assertEq(t.customer, customer);
        assertEq(t.maxPricePerReplica, PRICE);
        assertEq(t.deadline, _deadline());
        assertEq(t.commitDeadline, 0);
        assertEq(t.revealDeadline, 0);
        assertEq(t.replicas, 3);
        assertEq(t.quorum, 2);
        assertEq(t.maxReplicas, 5);
        assertEq(t.assigned, 0);
        assertEq(t.round, 0);
        assertEq(t.roundSize, 0);
        assertEq(t.roundCommitted, 0);
        assertEq(t.feeBps, FEE);
        assertEq(uint8(t.state), uint8(ITaskEscrow.TaskState.Posted));
    }

    function test_postTasks_onePullForTheBatch() public {
        ITaskEscrow.TaskTerms[] memory terms = new ITaskEscrow.TaskTerms[](3);
        terms[0] = _terms(1, 1, 1);
        terms[1] = _terms(3, 2, 4);
        terms[2] = _terms(2, 2, 2);
        terms[2].specHash = OTHER;
        terms[2].maxPricePerReplica = 3e18;
        uint256 total = escrow.escrowFor(1, PRICE) + escrow.escrowFor(4, PRICE) + escrow.escrowFor(2, 3e18);
        _post(1, 1, 1); // id 1
        uint256 before = token.balanceOf(customer);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.TaskPosted(4, customer, OTHER, 2, 2, 2, 3e18, _deadline(), escrow.escrowFor(2, 3e18));
        vm.prank(customer);
        uint256 first = escrow.postTasks(terms);
        assertEq(first, 2);
        assertEq(escrow.taskCount(), 4);
        assertEq(token.balanceOf(customer), before - total);
        assertEq(escrow.totalLocked(), total + escrow.escrowFor(1, PRICE));
        assertEq(escrow.getTask(3).maxReplicas, 4);
        assertEq(escrow.getTask(4).maxPricePerReplica, 3e18);
        // an empty batch posts nothing and returns the next id
        vm.prank(customer);
        assertEq(escrow.postTasks(new ITaskEscrow.TaskTerms[](0)), 5);
        assertEq(escrow.taskCount(), 4);
    }

    function test_postTasks_emitsOneTransfer() public {
        ITaskEscrow.TaskTerms[] memory terms = new ITaskEscrow.TaskTerms[](5);
        for (uint256 i; i < 5; ++i) {
            terms[i] = _terms(1, 1, 1);
        }
        vm.recordLogs();
        vm.prank(customer);
        escrow.postTasks(terms);
        _countTransfers(keccak256("Transfer(address,address,uint256)"));
        assertEq(_transfers, 1, "one pull for the batch");
        assertEq(_transferred, 5 * escrow.escrowFor(1, PRICE));
    }

    uint256 internal _transfers;
    uint256 internal _transferred;

    function _countTransfers(bytes32 topic) internal {
        Log[] memory logs = _logs();
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == address(token) && logs[i].topics[0] == topic) {
                ++_transfers;
                _transferred += abi.decode(logs[i].data, (uint256));
            }
        }
    }

    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function _logs() internal returns (Log[] memory out) {
        // forge-std's Vm.Log has the same layout
        bytes memory raw = abi.encode(vm.getRecordedLogs());
        out = abi.decode(raw, (Log[]));
    }

    function test_postTaskWithPermit() public {
        (address payer, uint256 pk) = makeAddrAndKey("payer");
        token.transfer(payer, 1_000e18);
        uint256 value = escrow.escrowFor(3, PRICE);
        uint256 permitDeadline = block.timestamp + 1 hours;
        bytes32 digest = _permitDigest(payer, address(escrow), value, token.nonces(payer), permitDeadline);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        vm.prank(payer);
        uint256 id = escrow.postTaskWithPermit(_terms(3, 2, 3), value, permitDeadline, v, r, s);
        assertEq(escrow.getTask(id).customer, payer);
        assertEq(token.balanceOf(address(escrow)), value);
        assertEq(token.allowance(payer, address(escrow)), 0);
    }

    function test_postTask_revertsOnBadTerms() public {
        ITaskEscrow.TaskTerms memory t = _terms(1, 1, 1);
        vm.startPrank(customer);
        t.specHash = bytes32(0);
        vm.expectRevert(ITaskEscrow.EscrowZeroSpecHash.selector);
        escrow.postTask(t);
        _expectBadReplication(3, 0, 3);
        _expectBadReplication(3, 4, 3);
        _expectBadReplication(4, 2, 3);
        _expectBadReplication(3, 2, 17);
        t = _terms(3, 2, 3);
        t.maxPricePerReplica = 0;
        vm.expectRevert(ITaskEscrow.EscrowZeroPrice.selector);
        escrow.postTask(t);
        uint64 earliest = uint64(block.timestamp) + COMMIT_WINDOW + REVEAL_WINDOW;
        t = _terms(3, 2, 3);
        t.deadline = earliest;
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowDeadlineTooSoon.selector, earliest, earliest));
        escrow.postTask(t);
        t.deadline = uint64(1) << 40;
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowParameterOutOfRange.selector, bytes32("deadline"), uint256(1) << 40)
        );
        escrow.postTask(t);
        // a bad entry fails the whole batch
        ITaskEscrow.TaskTerms[] memory terms = new ITaskEscrow.TaskTerms[](2);
        terms[0] = _terms(1, 1, 1);
        terms[1] = _terms(1, 1, 1);
        terms[1].maxPricePerReplica = 0;
        vm.expectRevert(ITaskEscrow.EscrowZeroPrice.selector);
        escrow.postTasks(terms);
        vm.stopPrank();
        // a price word out of uint96 range (hand-encoded calldata)
        bytes memory data = abi.encodeCall(escrow.postTask, (_terms(1, 1, 1)));
        assembly {
            mstore(add(data, add(0x24, 0x80)), shl(96, 1))
        }
        vm.prank(customer);
        (bool ok, bytes memory ret) = address(escrow).call(data);
        assertFalse(ok);
        assertEq(
            ret,
            abi.encodeWithSelector(
                ITaskEscrow.EscrowParameterOutOfRange.selector, bytes32("maxPricePerReplica"), uint256(1) << 96
            )
        );
        assertEq(escrow.taskCount(), 0);
    }

    function _expectBadReplication(uint8 k, uint8 q, uint8 maxK) internal {
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowInvalidReplication.selector, k, q, maxK));
        escrow.postTask(_terms(k, q, maxK));
    }

    // ------------------------------------------------------------------ cancel

    function test_cancelTask_creditsEverythingBack() public {
        uint256 before = token.balanceOf(customer);
        uint256 id = _post(3, 2, 3);
        uint256 escrowed = escrow.escrowFor(3, PRICE);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.TaskCancelled(id, escrowed);
        vm.prank(customer);
        escrow.cancelTask(id);
        assertEq(escrow.totalLocked(), 0);
        assertEq(escrow.claimable(customer), escrowed);
        assertEq(escrow.totalClaimable(), escrowed);
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Cancelled));
        vm.prank(customer);
        assertEq(escrow.claim(), escrowed);
        assertEq(token.balanceOf(customer), before);
        assertEq(token.balanceOf(address(escrow)), 0);
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
        for (uint256 i; i < 3; ++i) {
            vm.expectEmit(address(escrow));
            emit ITaskEscrow.TaskAssigned(id, providers[i]);
        }
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.RoundOpened(id, 3, cd, cd + REVEAL_WINDOW);
        _assign(id, _providers(0, 3));
        ITaskEscrow.Task memory t = escrow.getTask(id);
        assertEq(uint8(t.state), uint8(ITaskEscrow.TaskState.Assigned));
        assertEq(t.assigned, 3);
        assertEq(t.round, 1);
        assertEq(t.roundSize, 3);
        assertEq(t.roundCommitted, 0);
        assertEq(t.commitDeadline, cd);
        assertEq(t.revealDeadline, cd + REVEAL_WINDOW);
        assertEq(t.replicas, 3);
        assertEq(t.quorum, 2);
        assertEq(t.maxReplicas, 5);
        assertEq(t.feeBps, FEE);
        assertEq(t.deadline, _deadline());
        for (uint256 i; i < 3; ++i) {
            (ITaskEscrow.ReplicaState s, bytes32 payload) = escrow.replicaOf(id, providers[i]);
            assertEq(uint8(s), uint8(ITaskEscrow.ReplicaState.Assigned));
            assertEq(uint256(payload), 1, "payload: the round");
            assertEq(registry.activeAssignments(providers[i]), 1);
        }
        (ITaskEscrow.ReplicaState none,) = escrow.replicaOf(id, providers[3]);
        assertEq(uint8(none), uint8(ITaskEscrow.ReplicaState.None));
        // a second round: one more replica, round 2
        vm.warp(block.timestamp + 10);
        _assign(id, _providers(3, 1));
        t = escrow.getTask(id);
        assertEq(t.assigned, 4);
        assertEq(t.round, 2);
        assertEq(t.roundSize, 1);
        assertEq(t.commitDeadline, cd + 10);
        (, bytes32 p3) = escrow.replicaOf(id, providers[3]);
        assertEq(uint256(p3), 2);
    }

    function test_assignMany() public {
        uint256 a = _post(1, 1, 1);
        uint256 b = _post(2, 1, 2);
        uint256[] memory ids = _ids(a, b);
        address[][] memory ps = new address[][](2);
        ps[0] = _providers(0, 1);
        ps[1] = _providers(0, 2);
        vm.prank(matcher);
        escrow.assignMany(ids, ps);
        assertEq(escrow.getTask(a).assigned, 1);
        assertEq(escrow.getTask(b).assigned, 2);
        assertEq(registry.activeAssignments(providers[0]), 2);
        assertEq(registry.activeAssignments(providers[1]), 1);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowBatchLengthMismatch.selector, 2, 1));
        vm.prank(matcher);
        escrow.assignMany(ids, new address[][](1));
    }

    function test_assignMany_namesTheUnstakedProviderAndLocksNothing() public {
        address broke = makeAddr("broke");
        uint256 a = _post(2, 1, 2);
        uint256 b = _post(2, 1, 2);
        address[][] memory ps = new address[][](2);
        ps[0] = _providers(0, 2);
        ps[1] = new address[](2);
        (ps[1][0], ps[1][1]) = (providers[2], broke);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowProviderNotStaked.selector, b, broke));
        vm.prank(matcher);
        escrow.assignMany(_ids(a, b), ps);
        assertEq(registry.activeAssignments(providers[0]), 0);
        assertEq(uint8(escrow.getTask(a).state), uint8(ITaskEscrow.TaskState.Posted));
    }

    function test_assign_reverts() public {
        address[] memory three = _providers(0, 3);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotFound.selector, 9));
        _assign(9, three);
        uint256 id = _post(3, 2, 4);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, customer, escrow.MATCHER_ROLE())
        );
        vm.prank(customer);
        escrow.assign(id, three);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowWrongReplicaCount.selector, id, 2, 3));
        _assign(id, _providers(0, 2));
        address[] memory dup = _providers(0, 3);
        dup[2] = providers[0];
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowDuplicateProvider.selector, id, providers[0]));
        _assign(id, dup);
        address broke = makeAddr("broke");
        address[] memory withBroke = _providers(0, 3);
        withBroke[1] = broke;
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowProviderNotStaked.selector, id, broke));
        _assign(id, withBroke);
        _assign(id, three);
        // later rounds: at least one, at most maxReplicas in all, never a provider already on the task
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowWrongReplicaCount.selector, id, 0, 3));
        _assign(id, new address[](0));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTooManyReplicas.selector, id, 3, 2, 4));
        _assign(id, _providers(3, 2));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowDuplicateProvider.selector, id, providers[1]));
        _assign(id, _providers(1, 1));
        // no full round left before the deadline
        uint64 deadline = escrow.getTask(id).deadline;
        vm.warp(deadline - COMMIT_WINDOW - REVEAL_WINDOW);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowDeadlineTooSoon.selector, deadline, deadline));
        _assign(id, _providers(3, 1));
        // closed tasks take no assign
        uint256 c = _post(1, 1, 1);
        vm.prank(customer);
        escrow.cancelTask(c);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotInState.selector, c, ITaskEscrow.TaskState.Cancelled)
        );
        _assign(c, _providers(0, 1));
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
        (ITaskEscrow.ReplicaState s, bytes32 payload) = escrow.replicaOf(id, providers[0]);
        assertEq(uint8(s), uint8(ITaskEscrow.ReplicaState.Committed));
        assertEq(uint256(payload), uint256(c) & PAYLOAD);
        assertEq(escrow.getTask(id).roundCommitted, 1);
        _commit(id, providers[1], RESULT);
        assertEq(escrow.getTask(id).roundCommitted, 2);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.ResultRevealed(id, providers[0], RESULT);
        _reveal(id, providers[0], RESULT);
        (s, payload) = escrow.replicaOf(id, providers[0]);
        assertEq(uint8(s), uint8(ITaskEscrow.ReplicaState.Revealed));
        assertEq(uint256(payload), uint256(RESULT) & PAYLOAD);
    }

    function test_commitMany_revealMany() public {
        uint256 a = _post(1, 1, 1);
        uint256 b = _post(1, 1, 1);
        _assign(a, _providers(0, 1));
        _assign(b, _providers(0, 1));
        uint256[] memory ids = _ids(a, b);
        bytes32[] memory rs = new bytes32[](2);
        (rs[0], rs[1]) = (RESULT, OTHER);
        bytes32[] memory salts = _same(2, _salt(providers[0]));
        bytes32[] memory cs = new bytes32[](2);
        cs[0] = escrow.commitmentFor(RESULT, salts[0], providers[0]);
        cs[1] = escrow.commitmentFor(OTHER, salts[1], providers[0]);
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
        (ITaskEscrow.ReplicaState s, bytes32 payload) = escrow.replicaOf(b, providers[0]);
        assertEq(uint8(s), uint8(ITaskEscrow.ReplicaState.Revealed));
        assertEq(uint256(payload), uint256(OTHER) & PAYLOAD);
    }

    function test_commitMany_namesTheFailingTask() public {
        uint256 a = _post(1, 1, 1);
        uint256 b = _post(1, 1, 1);
        _assign(a, _providers(0, 1));
        bytes32[] memory cs = _same(2, RESULT);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotInState.selector, b, ITaskEscrow.TaskState.Posted)
        );
        vm.prank(providers[0]);
        escrow.commitMany(_ids(a, b), cs);
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
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotFound.selector, 99));
        _reveal(99, providers[0], RESULT);
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
        bytes32 expected = bytes32(uint256(escrow.commitmentFor(RESULT, _salt(providers[0]), providers[0])) & PAYLOAD);
        bytes32 computed = bytes32(uint256(escrow.commitmentFor(OTHER, _salt(providers[0]), providers[0])) & PAYLOAD);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowRevealMismatch.selector, id, providers[0], expected, computed)
        );
        _reveal(id, providers[0], OTHER);
        uint64 rd = escrow.getTask(id).revealDeadline;
        vm.warp(rd + 1);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowRevealWindowClosed.selector, id, rd, rd + 1));
        _reveal(id, providers[0], RESULT);
    }

    function test_reveal_opensWhenTheCurrentRoundCommitted() public {
        // round 1: providers[0] commits, providers[1] never does; round 2 (providers[2]) commits: reveals open
        // although providers[1] (an earlier round) is still Assigned
        uint256 id = _post(2, 1, 3);
        _assign(id, _providers(0, 2));
        _commit(id, providers[0], RESULT);
        _assign(id, _providers(2, 1));
        _commit(id, providers[2], RESULT);
        _reveal(id, providers[0], RESULT);
        _reveal(id, providers[2], RESULT);
        (ITaskEscrow.ReplicaState s,) = escrow.replicaOf(id, providers[2]);
        assertEq(uint8(s), uint8(ITaskEscrow.ReplicaState.Revealed));
    }

    // ------------------------------------------------------------------ finalize

    function test_finalize_settlesCreditsSlashesRefunds() public {
        bytes32[] memory rs = _same(3, RESULT);
        rs[2] = OTHER;
        uint256 custBefore = token.balanceOf(customer);
        uint256 id = _runToRevealed(rs, 2);
        uint96[] memory pay = _payments(3, 4e18);
        pay[2] = 0;
        uint256 stake2 = registry.stakeOf(providers[2]);
        uint256 slashed = stake2 * SLASH_DISSENT / 10_000;
        uint256 fee = 8e18 * uint256(FEE) / 10_000;
        uint256 escrowed = escrow.escrowFor(3, PRICE);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.ReplicaFinalized(id, providers[2], ITaskEscrow.ReplicaState.Dissented, 0);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.TaskSettled(id, RESULT, 2, 8e18, fee, escrowed - 8e18 - fee);
        _finalize(id, _report(_providers(0, 3), rs, pay));
        assertEq(escrow.claimable(providers[0]), 4e18);
        assertEq(escrow.claimable(providers[1]), 4e18);
        assertEq(escrow.claimable(providers[2]), 0);
        assertEq(escrow.claimable(treasury), fee);
        assertEq(escrow.claimable(customer), escrowed - 8e18 - fee);
        assertEq(escrow.totalLocked(), 0);
        assertEq(escrow.totalClaimable(), escrowed);
        assertEq(token.balanceOf(address(escrow)), escrowed);
        // the slash went through the registry, all of it straight to the treasury
        assertEq(registry.stakeOf(providers[2]), stake2 - slashed);
        assertEq(token.balanceOf(treasury), slashed);
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Settled));
        _assertReplica(id, providers[0], ITaskEscrow.ReplicaState.Agreed, RESULT);
        _assertReplica(id, providers[2], ITaskEscrow.ReplicaState.Dissented, OTHER);
        for (uint256 i; i < 3; ++i) {
            assertEq(registry.activeAssignments(providers[i]), 0);
        }
        // money leaves through claims
        assertEq(_claim(providers[0]), 4e18);
        assertEq(token.balanceOf(providers[0]), 4e18);
        _claim(customer);
        _claim(treasury);
        _claim(providers[1]);
        assertEq(token.balanceOf(address(escrow)), 0);
        // the customer's remedy is its refund: it ends down by exactly what it paid, none of the slash
        assertEq(token.balanceOf(customer), custBefore - 8e18 - fee);
    }

    function _assertReplica(uint256 id, address p, ITaskEscrow.ReplicaState state, bytes32 hash) internal view {
        (ITaskEscrow.ReplicaState s, bytes32 payload) = escrow.replicaOf(id, p);
        assertEq(uint8(s), uint8(state));
        assertEq(uint256(payload), uint256(hash) & PAYLOAD, "the payload (revealed hash) is kept");
    }

    function test_finalize_failsWithoutQuorumAndSlashesNoShows() public {
        uint256 id = _post(3, 2, 3);
        _assign(id, _providers(0, 3));
        _commit(id, providers[0], RESULT);
        _commit(id, providers[1], OTHER);
        vm.warp(escrow.getTask(id).commitDeadline + 1);
        _reveal(id, providers[0], RESULT);
        _reveal(id, providers[1], OTHER);
        // providers[2] never committed: once the commit window closed, all committed replicas revealed
        bytes32[] memory rs = new bytes32[](3);
        (rs[0], rs[1]) = (RESULT, OTHER);
        uint256 stake2 = registry.stakeOf(providers[2]);
        uint256 escrowed = escrow.escrowFor(3, PRICE);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.ReplicaFinalized(id, providers[2], ITaskEscrow.ReplicaState.NoShow, 0);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.TaskFailed(id, escrowed);
        _finalize(id, _report(_providers(0, 3), rs, _payments(3, 0)));
        uint256 slashed = stake2 * SLASH_NOSHOW / 10_000;
        assertEq(registry.stakeOf(providers[2]), stake2 - slashed);
        assertEq(escrow.claimable(customer), escrowed);
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Failed));
        (ITaskEscrow.ReplicaState s0,) = escrow.replicaOf(id, providers[0]);
        assertEq(uint8(s0), uint8(ITaskEscrow.ReplicaState.Released));
    }

    function test_finalize_tieIsNoQuorum() public {
        bytes32[] memory rs = new bytes32[](2);
        (rs[0], rs[1]) = (RESULT, OTHER);
        uint256 id = _runToRevealed(rs, 1);
        _finalize(id, _report(_providers(0, 2), rs, _payments(2, 0)));
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Failed));
    }

    function test_finalize_pluralityOfMixedHashes() public {
        // B, A, B, A, A: A has 3 votes, B 2, quorum 3
        bytes32[] memory rs = new bytes32[](5);
        (rs[0], rs[1], rs[2], rs[3], rs[4]) = (OTHER, RESULT, OTHER, RESULT, RESULT);
        uint256 id = _runToRevealed(rs, 3);
        uint96[] memory pay = new uint96[](5);
        (pay[1], pay[3], pay[4]) = (1e18, 2e18, 3e18);
        vm.expectEmit(address(escrow));
        uint256 fee = uint256(6e18) * FEE / 10_000;
        emit ITaskEscrow.TaskSettled(id, RESULT, 3, 6e18, fee, escrow.escrowFor(5, PRICE) - 6e18 - fee);
        _finalize(id, _report(_providers(0, 5), rs, pay));
        (ITaskEscrow.ReplicaState s0,) = escrow.replicaOf(id, providers[0]);
        assertEq(uint8(s0), uint8(ITaskEscrow.ReplicaState.Dissented));
        assertEq(escrow.claimable(providers[4]), 3e18);
    }

    function test_finalize_escalationRound() public {
        uint256 id = _post(2, 2, 3);
        _assign(id, _providers(0, 2));
        _commit(id, providers[0], RESULT);
        _commit(id, providers[1], OTHER);
        _reveal(id, providers[0], RESULT);
        _reveal(id, providers[1], OTHER);
        _assign(id, _providers(2, 1));
        _commit(id, providers[2], RESULT);
        _reveal(id, providers[2], RESULT);
        bytes32[] memory rs = new bytes32[](3);
        (rs[0], rs[1], rs[2]) = (RESULT, OTHER, RESULT);
        uint96[] memory pay = _payments(3, PRICE);
        pay[1] = 0;
        _finalize(id, _report(_providers(0, 3), rs, pay));
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Settled));
        assertEq(escrow.claimable(providers[2]), PRICE);
        (ITaskEscrow.ReplicaState s1,) = escrow.replicaOf(id, providers[1]);
        assertEq(uint8(s1), uint8(ITaskEscrow.ReplicaState.Dissented));
    }

    function test_finalizeMany() public {
        uint256 a = _runToRevealed(_same(1, RESULT), 1);
        uint256 b = _runToRevealed(_same(1, RESULT), 1);
        ITaskEscrow.ReplicaReport[][] memory reports = new ITaskEscrow.ReplicaReport[][](2);
        reports[0] = _report(_providers(0, 1), _same(1, RESULT), _payments(1, PRICE));
        reports[1] = _report(_providers(0, 1), _same(1, RESULT), _payments(1, 1e18));
        vm.prank(settler);
        escrow.finalizeMany(_ids(a, b), reports);
        assertEq(escrow.claimable(providers[0]), PRICE + 1e18);
        assertEq(escrow.claimable(treasury), (uint256(PRICE) * FEE / 10_000) + (uint256(1e18) * FEE / 10_000));
        assertEq(registry.activeAssignments(providers[0]), 0);
        assertEq(escrow.totalLocked(), 0);
        assertEq(token.balanceOf(address(escrow)), escrow.totalClaimable());
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowBatchLengthMismatch.selector, 2, 0));
        vm.prank(settler);
        escrow.finalizeMany(_ids(a, b), new ITaskEscrow.ReplicaReport[][](0));
    }

    function test_finalizeMany_slashesAfterCrediting() public {
        bytes32[] memory rs = new bytes32[](3);
        (rs[0], rs[1], rs[2]) = (RESULT, RESULT, OTHER);
        uint256 a = _runToRevealed(rs, 2);
        uint256 b = _runToRevealed(_same(3, RESULT), 3);
        uint256 stake2 = registry.stakeOf(providers[2]);
        ITaskEscrow.ReplicaReport[][] memory reports = new ITaskEscrow.ReplicaReport[][](2);
        uint96[] memory pay = _payments(3, 1e18);
        pay[2] = 0;
        reports[0] = _report(_providers(0, 3), rs, pay);
        reports[1] = _report(_providers(0, 3), _same(3, RESULT), _payments(3, 1e18));
        vm.prank(settler);
        escrow.finalizeMany(_ids(a, b), reports);
        assertEq(registry.stakeOf(providers[2]), stake2 - stake2 * SLASH_DISSENT / 10_000);
        assertEq(escrow.claimable(providers[2]), 1e18);
        assertEq(escrow.claimable(providers[0]), 2e18);
    }

    function test_finalize_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotFound.selector, 3));
        _finalize(3, new ITaskEscrow.ReplicaReport[](0));
        bytes32[] memory rs = _same(3, RESULT);
        rs[2] = OTHER;
        address[] memory ps = _providers(0, 3);
        uint256 id = _post(3, 2, 3);
        ITaskEscrow.ReplicaReport[] memory good = _report(ps, rs, _payments(3, 0));
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, customer, escrow.SETTLER_ROLE())
        );
        vm.prank(customer);
        escrow.finalize(id, good);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotInState.selector, id, ITaskEscrow.TaskState.Posted)
        );
        _finalize(id, good);
        _assign(id, ps);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowReportLength.selector, id, 2, 3));
        _finalize(id, _report(_providers(0, 2), _same(2, RESULT), _payments(2, 0)));
        uint64 rd = escrow.getTask(id).revealDeadline;
        // the current round may still commit
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowRevealsPending.selector, id, rd, uint64(block.timestamp))
        );
        _finalize(id, good);
        for (uint256 i; i < 3; ++i) {
            _commit(id, providers[i], rs[i]);
        }
        _reveal(id, providers[0], rs[0]);
        // committed replicas have not revealed
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowRevealsPending.selector, id, rd, uint64(block.timestamp))
        );
        _finalize(id, good);
        _reveal(id, providers[1], rs[1]);
        _reveal(id, providers[2], rs[2]);
        // the report: sorted, distinct, only the task's replicas, hashes as revealed
        ITaskEscrow.ReplicaReport[] memory bad = _report(ps, rs, _payments(3, 0));
        (bad[0], bad[1]) = (bad[1], bad[0]);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowReportUnsorted.selector, id, bad[1].provider));
        _finalize(id, bad);
        bad = _report(ps, rs, _payments(3, 0));
        bad[1] = bad[0];
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowReportUnsorted.selector, id, bad[0].provider));
        _finalize(id, bad);
        address[] memory stranger = _providers(0, 3);
        stranger[1] = providers[6];
        bad = _report(stranger, rs, _payments(3, 0));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowNotAssigned.selector, id, providers[6]));
        _finalize(id, bad);
        bytes32[] memory wrong = _same(3, RESULT);
        bad = _report(ps, wrong, _payments(3, 0)); // providers[2] revealed OTHER
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowReportHashMismatch.selector, id, providers[2], RESULT));
        _finalize(id, bad);
        uint96[] memory pay = _payments(3, 0);
        pay[1] = PRICE + 1;
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowPaymentAboveCap.selector, id, providers[1], PRICE + 1, PRICE)
        );
        _finalize(id, _report(ps, rs, pay));
        pay[1] = 0;
        pay[2] = 1;
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowPaymentToNonAgreeing.selector, id, providers[2], 1));
        _finalize(id, _report(ps, rs, pay));
        _finalize(id, good);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotInState.selector, id, ITaskEscrow.TaskState.Settled)
        );
        _finalize(id, good);
    }

    function test_finalize_afterRevealDeadlineUnrevealedIsNoShow() public {
        uint256 id = _post(2, 1, 2);
        _assign(id, _providers(0, 2));
        _commit(id, providers[0], RESULT);
        _commit(id, providers[1], RESULT);
        _reveal(id, providers[0], RESULT);
        vm.warp(escrow.getTask(id).revealDeadline + 1);
        _finalize(id, _report(_providers(0, 2), _same(2, RESULT), _payments(2, 0)));
        (ITaskEscrow.ReplicaState s1,) = escrow.replicaOf(id, providers[1]);
        assertEq(uint8(s1), uint8(ITaskEscrow.ReplicaState.NoShow));
        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Settled));
    }

    // ------------------------------------------------------------------ expire

    function test_expire_postedAndAssigned() public {
        uint256 before = token.balanceOf(customer);
        uint256 a = _post(1, 1, 1);
        uint256 b = _post(2, 1, 2);
        _assign(b, _providers(0, 2));
        _commit(b, providers[0], RESULT);
        address[] memory sorted = _sorted(_providers(0, 2));
        uint64 expiresAt = escrow.getTask(a).deadline + GRACE;
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowNotExpired.selector, a, expiresAt, uint64(block.timestamp))
        );
        escrow.expire(a, new address[](0));
        vm.warp(expiresAt);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.TaskExpired(a, escrow.escrowFor(1, PRICE));
        escrow.expire(a, new address[](0));
        // b's replicas must be listed: all of them, sorted, only its own
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowReportLength.selector, b, 1, 2));
        escrow.expire(b, _providers(0, 1));
        address[] memory unsorted = new address[](2);
        (unsorted[0], unsorted[1]) = (sorted[1], sorted[0]);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowReportUnsorted.selector, b, sorted[0]));
        escrow.expire(b, unsorted);
        address[] memory stranger = _sorted(_providers(5, 2));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowNotAssigned.selector, b, stranger[0]));
        escrow.expire(b, stranger);
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.ReplicaFinalized(b, sorted[0], ITaskEscrow.ReplicaState.Released, 0);
        escrow.expire(b, sorted);
        assertEq(escrow.totalLocked(), 0);
        assertEq(escrow.claimable(customer), escrow.escrowFor(1, PRICE) + escrow.escrowFor(2, PRICE));
        _claim(customer);
        assertEq(token.balanceOf(customer), before);
        assertEq(registry.activeAssignments(providers[0]), 0);
        (ITaskEscrow.ReplicaState s0,) = escrow.replicaOf(b, providers[0]);
        assertEq(uint8(s0), uint8(ITaskEscrow.ReplicaState.Released));
        assertEq(uint8(escrow.getTask(b).state), uint8(ITaskEscrow.TaskState.Expired));
        vm.expectRevert(
            abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotInState.selector, a, ITaskEscrow.TaskState.Expired)
        );
        escrow.expire(a, new address[](0));
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowTaskNotFound.selector, 99));
        escrow.expire(99, new address[](0));
    }

    // ------------------------------------------------------------------ claim

    function test_claim_and_claimFor() public {
        uint256 id = _runToRevealed(_same(1, RESULT), 1);
        _finalizeAll(id, _same(1, RESULT), PRICE / 2);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowNothingToClaim.selector, matcher));
        vm.prank(matcher);
        escrow.claim();
        vm.expectEmit(address(escrow));
        emit ITaskEscrow.Claimed(providers[0], PRICE / 2);
        vm.prank(providers[0]);
        assertEq(escrow.claim(), PRICE / 2);
        assertEq(token.balanceOf(providers[0]), PRICE / 2);
        assertEq(escrow.claimable(providers[0]), 0);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowNothingToClaim.selector, providers[0]));
        vm.prank(providers[0]);
        escrow.claim();
        // anyone may push an account's credits to it
        uint256 fee = escrow.claimable(treasury);
        vm.prank(matcher);
        assertEq(escrow.claimFor(treasury), fee);
        assertEq(token.balanceOf(treasury), fee);
        vm.expectRevert(abi.encodeWithSelector(ITaskEscrow.EscrowNothingToClaim.selector, treasury));
        escrow.claimFor(treasury);
        escrow.claimFor(customer);
        assertEq(escrow.totalClaimable(), 0);
        assertEq(token.balanceOf(address(escrow)), 0);
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
        assertEq(escrow.MAX_REPLICAS(), 16);
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
        _finalizeAll(id, _same(1, RESULT), PRICE);
        assertEq(escrow.claimable(treasury), PRICE * FEE / 10_000);
    }

    // ------------------------------------------------------------------ helpers

    function _ids(uint256 a, uint256 b) internal pure returns (uint256[] memory ids) {
        ids = new uint256[](2);
        (ids[0], ids[1]) = (a, b);
    }

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
