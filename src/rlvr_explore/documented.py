"""``documented(default, help)``: a dataclass field carrying help text (TRL's config style).
Mutable defaults get a factory, so every config instance owns its list or dict."""

from dataclasses import field


def documented(default, help: str):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})
