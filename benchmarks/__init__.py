"""Benchmarks of chathist against LangChain's DynamoDB history and a raw boto3 floor.

Run ``python -m benchmarks --help``; see docs/benchmarks.md.
"""
