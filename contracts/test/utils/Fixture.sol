// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";

import {GridToken} from "../../src/GridToken.sol";
import {ProviderRegistry} from "../../src/ProviderRegistry.sol";
import {TaskEscrow} from "../../src/TaskEscrow.sol";
import {ITaskEscrow} from "../../src/interfaces/ITaskEscrow.sol";
import {IProviderRegistry} from "../../src/interfaces/IProviderRegistry.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @dev Deploys token, registry and escrow with test parameters, funds customers and stakes providers.
abstract contract Fixture is Test {
    uint256 internal constant SUPPLY = 1_000_000_000e18;
    uint256 internal constant MIN_STAKE = 100e18;
    uint64 internal constant UNBONDING = 7 days;
    uint16 internal constant FEE = 250;
    uint64 internal constant COMMIT_WINDOW = 1 hours;
    uint64 internal constant REVEAL_WINDOW = 1 hours;
    uint64 internal constant GRACE = 1 days;
    uint16 internal constant SLASH_DISSENT = 1_000;
    uint16 internal constant SLASH_NOSHOW = 500;
    uint96 internal constant PRICE = 10e18;

    GridToken internal token;
    ProviderRegistry internal registry;
    TaskEscrow internal escrow;

    address internal admin = makeAddr("admin");
    address internal treasury = makeAddr("treasury");
    address internal matcher = makeAddr("matcher");
    address internal settler = makeAddr("settler");
    address internal customer = makeAddr("customer");
    address[] internal providers;

    bytes32 internal constant SPEC = keccak256("spec");
    bytes32 internal constant RESULT = keccak256("result");
    bytes32 internal constant OTHER = keccak256("other");

    function setUp() public virtual {
        token = new GridToken(address(this), SUPPLY);
        registry = new ProviderRegistry(IERC20(address(token)), admin, treasury, MIN_STAKE, UNBONDING);
        escrow = new TaskEscrow(
            IERC20(address(token)),
            IProviderRegistry(address(registry)),
            admin,
            treasury,
            FEE,
            COMMIT_WINDOW,
            REVEAL_WINDOW,
            GRACE,
            SLASH_DISSENT,
            SLASH_NOSHOW
        );
        vm.startPrank(admin);
        registry.setEscrow(address(escrow));
        escrow.grantRole(escrow.MATCHER_ROLE(), matcher);
        escrow.grantRole(escrow.SETTLER_ROLE(), settler);
        vm.stopPrank();

        token.transfer(customer, 1_000_000e18);
        vm.prank(customer);
        token.approve(address(escrow), type(uint256).max);
        for (uint256 i; i < 8; ++i) {
            address p = makeAddr(string.concat("provider", vm.toString(i)));
            providers.push(p);
            _stake(p, 1_000e18);
            vm.prank(p);
            registry.register(address(0), keccak256(abi.encode("caps", i)), "ipfs://caps");
        }
    }

    // ------------------------------------------------------------------ helpers

    function _stake(address p, uint256 amount) internal {
        token.transfer(p, amount);
        vm.startPrank(p);
        token.approve(address(registry), amount);
        registry.stake(amount);
        vm.stopPrank();
    }

    function _deadline() internal view returns (uint64) {
        return uint64(block.timestamp + 1 days);
    }

    function _terms(uint8 k, uint8 q, uint8 maxK) internal view returns (ITaskEscrow.TaskTerms memory) {
        return ITaskEscrow.TaskTerms({
            specHash: SPEC,
            replicas: k,
            quorum: q,
            maxReplicas: maxK,
            maxPricePerReplica: PRICE,
            deadline: _deadline()
        });
    }

    function _post(uint8 k, uint8 q, uint8 maxK) internal returns (uint256 id) {
        vm.prank(customer);
        id = escrow.postTask(_terms(k, q, maxK));
    }

    function _providers(uint256 from, uint256 count) internal view returns (address[] memory ps) {
        ps = new address[](count);
        for (uint256 i; i < count; ++i) {
            ps[i] = providers[from + i];
        }
    }

    function _assign(uint256 id, address[] memory ps) internal {
        vm.prank(matcher);
        escrow.assign(id, ps);
    }

    function _salt(address p) internal pure returns (bytes32) {
        return keccak256(abi.encode("salt", p));
    }

    function _commit(uint256 id, address p, bytes32 result) internal {
        bytes32 c = keccak256(abi.encode(result, _salt(p), p));
        vm.prank(p);
        escrow.commit(id, c);
    }

    function _reveal(uint256 id, address p, bytes32 result) internal {
        vm.prank(p);
        escrow.reveal(id, result, _salt(p));
    }

    function _payments(uint256 n, uint96 each) internal pure returns (uint96[] memory pay) {
        pay = new uint96[](n);
        for (uint256 i; i < n; ++i) {
            pay[i] = each;
        }
    }

    /// @dev A copy of `ps` sorted ascending (what finalize and expire take).
    function _sorted(address[] memory ps) internal pure returns (address[] memory out) {
        out = new address[](ps.length);
        for (uint256 i; i < ps.length; ++i) {
            address a = ps[i];
            uint256 j = i;
            for (; j > 0 && out[j - 1] > a; --j) {
                out[j] = out[j - 1];
            }
            out[j] = a;
        }
    }

    /// @dev The settler's report: entry i of the inputs is (ps[i], hashes[i], pay[i]); entries come back sorted by
    /// provider.
    function _report(address[] memory ps, bytes32[] memory hashes, uint96[] memory pay)
        internal
        pure
        returns (ITaskEscrow.ReplicaReport[] memory reports)
    {
        uint256 n = ps.length;
        reports = new ITaskEscrow.ReplicaReport[](n);
        for (uint256 i; i < n; ++i) {
            ITaskEscrow.ReplicaReport memory r = ITaskEscrow.ReplicaReport(ps[i], hashes[i], pay[i]);
            uint256 j = i;
            for (; j > 0 && reports[j - 1].provider > r.provider; --j) {
                reports[j] = reports[j - 1];
            }
            reports[j] = r;
        }
    }

    function _finalize(uint256 id, ITaskEscrow.ReplicaReport[] memory reports) internal {
        vm.prank(settler);
        escrow.finalize(id, reports);
    }

    /// @dev Finalizes with providers[0..k) reporting `results`, each paid `each` (0 for the non-agreeing is the
    /// caller's job: pass `pay` explicitly with `_report` then).
    function _finalizeAll(uint256 id, bytes32[] memory results, uint96 each) internal {
        _finalize(id, _report(_providers(0, results.length), results, _payments(results.length, each)));
    }

    /// @dev Posts a k-of-k task, assigns providers[0..k), commits and reveals `results`.
    function _runToRevealed(bytes32[] memory results, uint8 q) internal returns (uint256 id) {
        uint8 k = uint8(results.length);
        id = _post(k, q, k);
        _assign(id, _providers(0, k));
        for (uint256 i; i < k; ++i) {
            _commit(id, providers[i], results[i]);
        }
        for (uint256 i; i < k; ++i) {
            _reveal(id, providers[i], results[i]);
        }
    }

    function _same(uint256 k, bytes32 h) internal pure returns (bytes32[] memory rs) {
        rs = new bytes32[](k);
        for (uint256 i; i < k; ++i) {
            rs[i] = h;
        }
    }

    function _claim(address account) internal returns (uint256 amount) {
        if (escrow.claimable(account) == 0) return 0;
        amount = escrow.claimFor(account);
    }
}
