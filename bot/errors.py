"""The exception tree: one root, branches chosen by what the caller does next.

- ``RequestRejected`` and its children: answer the HTTP caller with a 4xx.
- ``UsageError``: tell the chat user what was wrong with the command.
- ``UpstreamError``: a call to DingTalk failed; retry, or apologise.
- ``ConfigError``: refuse to start.

No message built here or in a subclass may contain a secret, a token,
a signature or a message body: name the setting or field, not its value.
"""


class BotError(Exception):
    """Root of every error dingbot raises on purpose."""


class ConfigError(BotError):
    """A setting is missing or malformed; the process should not start."""

    def __init__(self, setting: str, problem: str, fix: str) -> None:
        self.setting = setting
        self.problem = problem
        self.fix = fix
        super().__init__(f"{setting} {problem}; {fix}")


class RequestRejected(BotError):
    """An inbound callback is refused before any handler sees it.

    ``status`` is the HTTP status to answer with and ``reason`` a short,
    secret-free phrase safe to show the caller.
    """

    status = 400

    def __init__(self, reason: str, status: int | None = None) -> None:
        self.reason = reason
        if status is not None:
            self.status = status
        super().__init__(reason)


class SignatureError(RequestRejected):
    """The request's signature or timestamp does not check out."""

    status = 401


class UsageError(BotError):
    """A chat command was used wrongly; the message is shown to the user."""


class AccessDenied(BotError):
    """The sender may not use this command; the message is shown to the user."""


class UpstreamError(BotError):
    """A call to DingTalk (or another outside service) failed.

    ``retryable`` says whether trying again later may help.
    """

    retryable = False
