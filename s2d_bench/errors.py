"""The exceptions the CLI answers in one line: a mistake a user can fix (bad config, unknown name, bad input: exit
status 2), and a run stopped on request where it can continue (exit status 130). Everything else is a bug and keeps
its traceback.
"""


class UserError(ValueError):
    """A user-fixable problem; the message must name the fix."""


class Stopped(Exception):
    """A run stopped where it can continue from, because `reason` (a signal's name) asked it to (resume.py); a rerun continues."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}; stopped ({reason}): run the same command again to continue from there")
        self.what, self.reason = what, reason

    def __reduce__(self):  # noqa: ANN204 - raised in a scheduler's worker, unpickled in its parent
        return Stopped, (self.what, self.reason)
