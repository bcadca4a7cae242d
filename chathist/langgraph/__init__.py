"""LangGraph persistence on chathist's table: ``pip install 'chathist[langgraph]'``.

`DynamoDBSaver` is a LangGraph checkpointer (``BaseCheckpointSaver``) whose threads live in a
table made by `chathist.create_table`, beside chat histories; see docs/langgraph.md.
"""

from chathist.langgraph.saver import DynamoDBSaver
from chathist.langgraph.sessions import astart_thread, start_thread

__all__ = ["DynamoDBSaver", "astart_thread", "start_thread"]
