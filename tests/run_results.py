"""What the tests of training runs share: comparing two runs' results up to the fields that measure time."""

#: Fields of metrics / history records that measure time (or where a run resumed), not results.
TIME_KEYS = ("train_seconds", "epoch_seconds", "seconds_per_epoch", "train_seconds_per_epoch", "eval_seconds",
             "total_seconds", "session_seconds", "aa_seconds", "resumed_from_epoch", "aa_resumed")


def without_times(obj, ignore=TIME_KEYS):
    """``obj`` (nested dicts / lists of a run's JSON) without the keys in ``ignore``."""
    if isinstance(obj, dict):
        return {k: without_times(v, ignore) for k, v in obj.items() if k not in ignore}
    if isinstance(obj, list):
        return [without_times(v, ignore) for v in obj]
    return obj
