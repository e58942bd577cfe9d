"""Git-like history for weights: commits, refs, the Repository, diff and merge."""

from .commit import Commit, CommitInfo
from .remotes import SyncResult
from .repository import Repository

__all__ = ["Commit", "CommitInfo", "Repository", "SyncResult"]
