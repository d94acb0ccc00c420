"""The one exception type for mistakes a user can fix (bad config, unknown name, bad input).

The CLI turns it into a one-line message and exit status 2; everything else is a bug and keeps
its traceback.
"""


class UserError(ValueError):
    """A user-fixable problem; the message must name the fix."""
