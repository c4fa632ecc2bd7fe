"""The API as `hashgrid marketplace serve` runs it (guarded protocol, settings from HASHGRID_* env) but with a
fixed fee and every address staked, for `schemathesis run` against a real server without a chain:

    python -m tests.marketplace.fuzz_server PORT

Not a test module: test_schemathesis.py starts it in a subprocess.
"""

from __future__ import annotations

import sys
from typing import Any

from marketplace.api.app import create_app
from marketplace.api.chain import StaticFeeOracle, StaticStakeOracle
from marketplace.api.server import serve, server_config
from marketplace.settings import MarketplaceSettings


def make_app() -> Any:
    stakes, fee = StaticStakeOracle(), StaticFeeOracle(250)
    return create_app(MarketplaceSettings(), stake_oracle=stakes, fee_oracle=fee)


def main() -> None:
    settings = MarketplaceSettings()
    serve(server_config(make_app(), settings, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning"))


if __name__ == "__main__":
    main()
