"""Fault-injection tests of the durability contract (docs/durability.md), each with a ledger."""
