"""Billing: metered usage -> prices -> settlement on chain exactly once, reconciled against the chain.

Pure parts (prices, usage, invoice) take plain inputs; settlement and reconcile talk to the escrow through
hashgrid.chain and keep their own journal table. See billing/README.md and docs/billing.md.
"""
