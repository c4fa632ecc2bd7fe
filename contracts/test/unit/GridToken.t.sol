// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {GridToken} from "../../src/GridToken.sol";

contract GridTokenTest is Test {
    function test_metadataSupplyVotesPermit() public {
        address holder = makeAddr("holder");
        GridToken token = new GridToken(holder, 1_000e18);
        assertEq(token.name(), "Hashgrid");
        assertEq(token.symbol(), "GRID");
        assertEq(token.decimals(), 18);
        assertEq(token.totalSupply(), 1_000e18);
        assertEq(token.balanceOf(holder), 1_000e18);
        assertEq(token.getVotes(holder), 0);
        vm.prank(holder);
        token.delegate(holder);
        assertEq(token.getVotes(holder), 1_000e18);
        vm.roll(block.number + 1);
        assertEq(token.getPastVotes(holder, block.number - 1), 1_000e18);

        (address owner, uint256 pk) = makeAddrAndKey("owner");
        address spender = makeAddr("spender");
        uint256 deadline = block.timestamp + 1;
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                owner,
                spender,
                5,
                token.nonces(owner),
                deadline
            )
        );
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(pk, keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash)));
        token.permit(owner, spender, 5, deadline, v, r, s);
        assertEq(token.allowance(owner, spender), 5);
        assertEq(token.nonces(owner), 1);
    }
}
