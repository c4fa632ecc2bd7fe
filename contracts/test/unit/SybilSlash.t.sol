// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ITaskEscrow} from "../../src/interfaces/ITaskEscrow.sol";
import {Fixture} from "../utils/Fixture.sol";

/// @dev A customer that controls m of a task's k replicas (sybil providers) and has them out-vote the honest ones
/// must not profit: it can never receive a slash, and what it pays its own sybils comes back minus the protocol fee.
/// The coalition's holdings are its wallets plus its sybils' stake (stake at risk counts as theirs).
contract SybilSlashTest is Fixture {
    /// The issue's attack: k = 3, quorum 2, two sybils out-vote the honest third, which is slashed as a dissenter.
    function test_sybilMajority_outvotesHonest_coalitionEndsPoorer() public {
        address[] memory ps = _providers(0, 3); // providers[0], [1]: the customer's sybils; providers[2]: honest
        address honest = ps[2];
        uint256 coalitionBefore = _coalition(ps, 2);
        uint256 honestStakeBefore = registry.stakeOf(honest);
        uint256 treasuryBefore = token.balanceOf(treasury);

        uint256 id = _post(3, 2, 3);
        _assign(id, ps);
        bytes32[] memory rs = new bytes32[](3);
        (rs[0], rs[1], rs[2]) = (OTHER, OTHER, RESULT); // the sybils agree on a wrong hash; the honest one is right
        for (uint256 i; i < 3; ++i) {
            _commit(id, ps[i], rs[i]);
        }
        for (uint256 i; i < 3; ++i) {
            _reveal(id, ps[i], rs[i]);
        }
        uint96[] memory pay = new uint96[](3);
        (pay[0], pay[1]) = (PRICE, PRICE); // the sybils bill the most they may, to themselves
        _finalize(id, _report(ps, rs, pay));
        _claimAll(ps);

        assertEq(uint8(escrow.getTask(id).state), uint8(ITaskEscrow.TaskState.Settled), "the attack won the vote");
        uint256 slashed = honestStakeBefore - registry.stakeOf(honest);
        assertEq(slashed, honestStakeBefore * SLASH_DISSENT / 10_000, "the honest provider was slashed");
        uint256 fee = 2 * uint256(PRICE) * FEE / 10_000;
        uint256 coalitionAfter = _coalition(ps, 2);
        assertLt(coalitionAfter, coalitionBefore, "customer + sybils gained from out-voting");
        assertEq(coalitionBefore - coalitionAfter, fee, "the coalition lost exactly the fee on its self-payments");
        assertEq(token.balanceOf(treasury) - treasuryBefore, slashed + fee, "the slash went to the treasury");
    }

    struct Before {
        uint256 coalition;
        uint256 customer;
        uint256 treasury;
        uint256 stakes;
    }

    /// For every k, every m of k sybils, any quorum, payment, fee and slash rates: the coalition never ends richer,
    /// and the customer alone never gets back more than it escrowed.
    function testFuzz_sybilCoalition_neverGains(
        uint8 k,
        uint8 m,
        uint8 q,
        uint256 paySeed,
        uint16 fee,
        uint16 dissentBps
    ) public {
        k = uint8(bound(k, 1, 6));
        m = uint8(bound(m, 0, k));
        q = uint8(bound(q, 1, k));
        vm.startPrank(admin);
        escrow.setProtocolFeeBps(uint16(bound(fee, 0, escrow.MAX_PROTOCOL_FEE_BPS())));
        escrow.setSlashDissentBps(uint16(bound(dissentBps, 0, 10_000)));
        vm.stopPrank();
        address[] memory ps = _providers(0, k); // the first m are the customer's sybils
        Before memory b = Before(_coalition(ps, m), token.balanceOf(customer), token.balanceOf(treasury), _stakes(ps));

        uint256 paid = _attack(ps, m, q, paySeed);

        assertLe(_coalition(ps, m), b.coalition, "customer + sybils gained");
        assertLe(token.balanceOf(customer), b.customer, "the customer got back more than it escrowed");
        // every token the stakes lost reached the treasury, with the fee on what was paid
        uint256 slashed = b.stakes - _stakes(ps);
        assertEq(token.balanceOf(treasury) - b.treasury, slashed + paid * escrow.protocolFeeBps() / 10_000);
    }

    /// @dev Posts a k-of-k task with quorum q, the first m replicas reveal OTHER and the rest RESULT, finalizes with
    /// the winners (the escrow's rule: the unique most-revealed hash with at least q votes) paid up to their cap,
    /// and claims every credit. Returns what was paid.
    function _attack(address[] memory ps, uint256 m, uint8 q, uint256 paySeed) internal returns (uint256 paid) {
        uint8 k = uint8(ps.length);
        uint256 id = _post(k, q, k);
        _assign(id, ps);
        bytes32[] memory rs = new bytes32[](k);
        for (uint256 i; i < k; ++i) {
            rs[i] = i < m ? OTHER : RESULT;
            _commit(id, ps[i], rs[i]);
        }
        for (uint256 i; i < k; ++i) {
            _reveal(id, ps[i], rs[i]);
        }
        uint256 honestVotes = k - m;
        bytes32 winner;
        if (m > honestVotes && m >= q) winner = OTHER;
        else if (honestVotes > m && honestVotes >= q) winner = RESULT;
        uint96[] memory pay = new uint96[](k);
        for (uint256 i; i < k; ++i) {
            if (winner != bytes32(0) && rs[i] == winner) {
                pay[i] = uint96(bound(uint256(keccak256(abi.encode(paySeed, i))), 0, PRICE));
                paid += pay[i];
            }
        }
        _finalize(id, _report(ps, rs, pay));
        _claimAll(ps);
    }

    /// @dev The customer's wallet plus the wallets and stake (active and unbonding) of `ps[0..m)`, its sybils.
    function _coalition(address[] memory ps, uint256 m) internal view returns (uint256 total) {
        total = token.balanceOf(customer);
        for (uint256 i; i < m; ++i) {
            (uint256 unbonding,) = registry.unbondingOf(ps[i]);
            total += token.balanceOf(ps[i]) + registry.stakeOf(ps[i]) + unbonding;
        }
    }

    function _stakes(address[] memory ps) internal view returns (uint256 total) {
        for (uint256 i; i < ps.length; ++i) {
            (uint256 unbonding,) = registry.unbondingOf(ps[i]);
            total += registry.stakeOf(ps[i]) + unbonding;
        }
    }

    function _claimAll(address[] memory ps) internal {
        for (uint256 i; i < ps.length; ++i) {
            _claim(ps[i]);
        }
        _claim(customer);
        _claim(treasury);
    }
}
