"""The context-manager half of every test server: started on entry, always closed on exit."""

from __future__ import annotations

from typing import TypeVar

Server = TypeVar("Server", bound="Managed")


class Managed:
    """``with Server() as server:`` calls ``start()``; ``close()`` runs on exit and when ``start()`` fails."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: Server) -> Server:  # typing.Self needs Python 3.11; 3.10 is supported
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
