"""aopkit: agent-oriented programming. Agents are actors that talk only by passing messages."""

from __future__ import annotations

from .agent import Agent
from .blocks import (
    AudioBlock,
    Base64Source,
    Block,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UnknownBlock,
    UnknownSource,
    URLSource,
    VideoBlock,
)
from .codec import Codec
from .compaction import Compaction
from .durable import (
    ApprovalRequest,
    AwaitingApproval,
    Decision,
    Diverged,
    DurableError,
    RunInUse,
    ToolInterrupted,
    answer_approval,
    durable,
    pending_approval,
    resume,
)
from .errors import (
    AopkitError,
    Claimed,
    ConfigurationError,
    DecodeError,
    DuplicateRegistrationError,
    EncodeError,
    LookupFailed,
    MessageTypeError,
    PluginError,
    ReplyError,
    StoreError,
)
from .hookspecs import hookimpl
from .hub import DeliveryError, MsgHub
from .kernel import Kernel, default_kernel
from .memory import Memory
from .message import Msg
from .model_agent import ModelAgent
from .models import Usage
from .pipelines import fanout, sequential
from .pool import AgentPool, Replies, Round, Rounds, pools
from .prices import Price
from .progress import show_progress
from .react import ReActAgent
from .session import JSONFileStore, SQLiteStore, load_session, save_session
from .sinks import (  # importing sinks defines loguru's CHAT level
    CHAT,
    ChatLog,
    JsonlTrace,
    show_chat,
)
from .toolkit import Tool, Toolkit, tool
from .usage import Budget, BudgetExceeded
from .user import UserAgent

__version__ = "0.1.0"

__all__ = [
    "CHAT",
    "Agent",
    "AgentPool",
    "AopkitError",
    "ApprovalRequest",
    "AudioBlock",
    "AwaitingApproval",
    "Base64Source",
    "Block",
    "Budget",
    "BudgetExceeded",
    "ChatLog",
    "Claimed",
    "Codec",
    "Compaction",
    "ConfigurationError",
    "Decision",
    "DecodeError",
    "DeliveryError",
    "Diverged",
    "DuplicateRegistrationError",
    "DurableError",
    "EncodeError",
    "ImageBlock",
    "JSONFileStore",
    "JsonlTrace",
    "Kernel",
    "LookupFailed",
    "Memory",
    "MessageTypeError",
    "ModelAgent",
    "Msg",
    "MsgHub",
    "PluginError",
    "Price",
    "ReActAgent",
    "Replies",
    "ReplyError",
    "Round",
    "Rounds",
    "RunInUse",
    "SQLiteStore",
    "StoreError",
    "TextBlock",
    "ThinkingBlock",
    "Tool",
    "ToolInterrupted",
    "ToolResultBlock",
    "ToolUseBlock",
    "Toolkit",
    "URLSource",
    "UnknownBlock",
    "UnknownSource",
    "Usage",
    "UserAgent",
    "VideoBlock",
    "answer_approval",
    "default_kernel",
    "durable",
    "fanout",
    "hookimpl",
    "load_session",
    "pending_approval",
    "pools",
    "resume",
    "save_session",
    "sequential",
    "show_chat",
    "show_progress",
    "tool",
]
