// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title GridToken
/// @dev The Hashgrid token (GRID): customers pay for tasks with it, providers stake it in the ProviderRegistry,
/// and holders vote with it in GridGovernor. ERC-20 with EIP-2612 permit (so posting a task or staking needs no
/// prior approve) and ERC20Votes checkpoints (block-number clock).
///
/// NOTE: the whole supply is minted once to `initialHolder` at deployment; there is no further minting or
/// burning. Voting power counts only after the holder delegates (to itself or another account); tokens held by
/// the escrow, the registry or undelegated accounts carry no votes.
contract GridToken is ERC20, ERC20Permit, ERC20Votes {
    constructor(address initialHolder, uint256 initialSupply) ERC20("Hashgrid", "GRID") ERC20Permit("Hashgrid") {
        _mint(initialHolder, initialSupply);
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }

    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}
