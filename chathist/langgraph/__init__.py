"""LangGraph persistence on chathist's table: ``pip install 'chathist[langgraph]'``.

`DynamoDBSaver` is a LangGraph checkpointer (``BaseCheckpointSaver``) whose threads live in a
table made by `chathist.create_table`, beside chat histories; see docs/langgraph.md.
"""

from chathist.langgraph.saver import DynamoDBSaver

__all__ = ["DynamoDBSaver"]
