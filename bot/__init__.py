"""dingbot: a DingTalk chatops bot and webhook responder."""

__version__ = "0.1.0"
