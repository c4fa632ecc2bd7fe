// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";
import {IGovernor} from "@openzeppelin/contracts/governance/IGovernor.sol";
import {IVotes} from "@openzeppelin/contracts/governance/utils/IVotes.sol";
import {GridGovernor} from "../../src/GridGovernor.sol";
import {Fixture} from "../utils/Fixture.sol";

/// @dev A proposal through GridGovernor + Timelock changes an escrow parameter, and it takes effect.
contract GovernanceTest is Fixture {
    TimelockController internal timelock;
    GridGovernor internal governor;

    function setUp() public override {
        super.setUp();
        address[] memory none = new address[](0);
        address[] memory anyone = new address[](1); // address(0): executor open
        timelock = new TimelockController(2 days, none, anyone, address(this));
        governor = new GridGovernor(IVotes(address(token)), timelock, 1, 50, 0, 4);
        timelock.grantRole(timelock.PROPOSER_ROLE(), address(governor));
        timelock.grantRole(timelock.CANCELLER_ROLE(), address(governor));
        timelock.renounceRole(timelock.DEFAULT_ADMIN_ROLE(), address(this));
        vm.startPrank(admin);
        escrow.grantRole(bytes32(0), address(timelock));
        escrow.renounceRole(bytes32(0), admin);
        vm.stopPrank();
        token.delegate(address(this));
        vm.roll(block.number + 1);
    }

    function test_proposalChangesEscrowFee() public {
        address[] memory targets = new address[](1);
        targets[0] = address(escrow);
        uint256[] memory values = new uint256[](1);
        bytes[] memory calldatas = new bytes[](1);
        calldatas[0] = abi.encodeCall(escrow.setProtocolFeeBps, (100));
        string memory description = "Lower the protocol fee to 1%";
        bytes32 descriptionHash = keccak256(bytes(description));

        uint256 id = governor.propose(targets, values, calldatas, description);
        assertEq(uint8(governor.state(id)), uint8(IGovernor.ProposalState.Pending));
        vm.roll(block.number + governor.votingDelay() + 1);
        governor.castVote(id, 1);
        vm.roll(block.number + governor.votingPeriod());
        assertEq(uint8(governor.state(id)), uint8(IGovernor.ProposalState.Succeeded));
        governor.queue(targets, values, calldatas, descriptionHash);
        assertEq(uint8(governor.state(id)), uint8(IGovernor.ProposalState.Queued));
        vm.warp(block.timestamp + 2 days + 1);
        governor.execute(targets, values, calldatas, descriptionHash);
        assertEq(uint8(governor.state(id)), uint8(IGovernor.ProposalState.Executed));
        assertEq(escrow.protocolFeeBps(), 100);
        // and it takes effect: a new post is charged the new fee
        uint256 id2 = _post(1, 1, 1);
        assertEq(escrow.getTask(id2).feeBps, 100);
        assertEq(governor.quorum(block.number - 1), token.totalSupply() * 4 / 100);
    }
}
