// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {console} from "forge-std/console.sol";
import {Vm} from "forge-std/Vm.sol";
import {Fixture} from "../utils/Fixture.sol";

/// @dev Gas per task, end to end (post, assign, k commits, k reveals, finalize) with batches of N tasks and the
/// same k providers across the batch, as `python -m bench.gas` measures it. Each call stands for one transaction:
/// the touched contracts are cooled first (vm.cool), and 21000 + calldata gas are added, refunds subtracted
/// (capped at 1/5). Run with `forge test --match-contract GasTest -vv` to see the table.
contract GasTest is Fixture {
    uint256 internal constant N = 100;

    struct Steps {
        uint256 post;
        uint256 assign;
        uint256 commit;
        uint256 reveal;
        uint256 finalize;
    }

    function test_gasPerTask_k1() public {
        _report(1, _run(1));
    }

    function test_gasPerTask_k3() public {
        Steps memory s = _run(3);
        _report(3, s);
        // guard against regressions; see contracts/README.md for the figures and the 250k target
        assertLt(_total(s) / N, 500_000);
    }

    function test_gasPerTask_k5() public {
        _report(5, _run(5));
    }

    function _run(uint8 k) internal returns (Steps memory s) {
        uint256[] memory ids = new uint256[](N);
        uint64 deadline = _deadline();
        for (uint256 i; i < N; ++i) {
            bytes memory data = abi.encodeCall(escrow.postTask, (keccak256(abi.encode(i)), k, k / 2 + 1, k, PRICE, deadline));
            (uint256 gas, bytes memory ret) = _tx(customer, address(escrow), data);
            s.post += gas;
            ids[i] = abi.decode(ret, (uint256));
        }
        address[][] memory ps = new address[][](N);
        for (uint256 i; i < N; ++i) {
            ps[i] = _providers(0, k);
        }
        (s.assign,) = _tx(matcher, address(escrow), abi.encodeCall(escrow.assignMany, (ids, ps)));
        bytes32[] memory results = _same(N, RESULT);
        for (uint256 p; p < k; ++p) {
            address provider = providers[p];
            bytes32[] memory cs = new bytes32[](N);
            bytes32[] memory salts = new bytes32[](N);
            for (uint256 i; i < N; ++i) {
                salts[i] = keccak256(abi.encode(i, provider));
                cs[i] = keccak256(abi.encode(RESULT, salts[i], provider));
            }
            (uint256 gas,) = _tx(provider, address(escrow), abi.encodeCall(escrow.commitMany, (ids, cs)));
            s.commit += gas;
            // keep salts for the reveal
            _salts[provider] = salts;
        }
        for (uint256 p; p < k; ++p) {
            address provider = providers[p];
            (uint256 gas,) =
                _tx(provider, address(escrow), abi.encodeCall(escrow.revealMany, (ids, results, _salts[provider])));
            s.reveal += gas;
        }
        uint96[][] memory pays = new uint96[][](N);
        for (uint256 i; i < N; ++i) {
            pays[i] = _payments(k, PRICE / 2);
        }
        (s.finalize,) = _tx(settler, address(escrow), abi.encodeCall(escrow.finalizeMany, (ids, pays)));
    }

    mapping(address => bytes32[]) internal _salts;

    function _tx(address from, address to, bytes memory data) internal returns (uint256 gas, bytes memory ret) {
        vm.cool(address(escrow));
        vm.cool(address(registry));
        vm.cool(address(token));
        vm.prank(from);
        bool ok;
        (ok, ret) = to.call(data);
        require(ok, "tx reverted");
        Vm.Gas memory g = vm.lastCallGas();
        gas = 21_000 + _calldataGas(data) + g.gasTotalUsed;
        uint256 refund = g.gasRefunded > 0 ? uint256(uint64(g.gasRefunded)) : 0;
        if (refund > gas / 5) refund = gas / 5;
        gas -= refund;
    }

    function _calldataGas(bytes memory data) internal pure returns (uint256 gas) {
        for (uint256 i; i < data.length; ++i) {
            gas += data[i] == 0 ? 4 : 16;
        }
    }

    function _total(Steps memory s) internal pure returns (uint256) {
        return s.post + s.assign + s.commit + s.reveal + s.finalize;
    }

    function _report(uint8 k, Steps memory s) internal pure {
        console.log("k =", k, "tasks per batch =", N);
        console.log("  post (one tx per task) per task:", s.post / N);
        console.log("  assign (assignMany)    per task:", s.assign / N);
        console.log("  commits (k commitMany) per task:", s.commit / N);
        console.log("  reveals (k revealMany) per task:", s.reveal / N);
        console.log("  finalize (finalizeMany)per task:", s.finalize / N);
        console.log("  TOTAL per task:", _total(s) / N);
    }
}
