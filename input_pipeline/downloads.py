"""Downloads by tensorflow_datasets, made fail-fast and clean: a check in seconds that a
dataset's download servers answer (tfds itself retries for minutes on a machine without
internet), and the removal of what a failed download created, nothing older.
"""

import contextlib
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator

import tensorflow_datasets as tfds

# How long a download server may take to accept a connection before we call it unreachable: a
# working connection answers in well under a second; tfds itself retries for minutes.
_PROBE_TIMEOUT_S = 5.0
_DEFAULT_PORTS = {'http': 80, 'https': 443, 'ftp': 21}


def download_servers(builder: tfds.core.DatasetBuilder) -> list[tuple[str, int]]:
  """The (host, port) pairs a download of `builder` connects to: its URLs' or their proxy's.

  The URLs are those in the builder's checksums file (tfds's `url_infos`); none for datasets
  without one, or whose files are downloaded by hand. Proxies are read from the environment, as
  tfds's downloader (requests) reads them.
  """
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    return []
  proxies = urllib.request.getproxies()
  servers = []
  for url in builder.url_infos or {}:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
      continue
    proxy = proxies.get(parts.scheme) or proxies.get('all')
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
      parts = urllib.parse.urlsplit(proxy if '://' in proxy else f'http://{proxy}')
    server = (parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme, 80))
    if server not in servers:
      servers.append(server)
  return servers


def unreachable_server(servers: list[tuple[str, int]]) -> str:
  """'host:port: why' for the first of `servers` that takes no connection; '' if all take one.

  Each server is tried in its own thread, so that a name lookup that hangs (socket timeouts do
  not bound it) costs no more than _PROBE_TIMEOUT_S in all.
  """
  failures = {}

  def connect(server: tuple[str, int]) -> None:
    try:
      socket.create_connection(server, timeout=_PROBE_TIMEOUT_S).close()
    except OSError as e:
      failures[server] = e.strerror or str(e) or type(e).__name__
    else:
      failures[server] = ''

  threads = [threading.Thread(target=connect, args=(s,), daemon=True) for s in servers]
  for thread in threads:
    thread.start()
  deadline = time.monotonic() + _PROBE_TIMEOUT_S
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
  for host, port in servers:
    why = failures.get((host, port), f'no answer within {_PROBE_TIMEOUT_S:g} s')
    if why:
      return f'{host}:{port}: {why}'
  return ''


def _paths_a_download_adds_to(builder: tfds.core.DatasetBuilder) -> dict[str, str]:
  """The folders where tfds's download_and_prepare creates files, by role."""
  root = os.fspath(builder.data_dir_root)
  downloads = os.path.join(root, 'downloads')
  return dict(
      root=root,
      dataset=os.path.join(root, builder.name),  # <name>[/<config>]/<version>[.incomplete...]
      downloads=downloads,
      own_downloads=os.path.join(downloads, builder.name),  # files, <file>.tmp.<uuid>/
      extracted=os.path.join(downloads, 'extracted'),  # [incomplete.<uuid>_]<METHOD>.<file>
  )


def _tree(path: str) -> set[str]:
  """`path` and everything under it, if it exists."""
  paths = {path} if os.path.lexists(path) else set()
  for parent, dirs, files in os.walk(path):
    paths.update(os.path.join(parent, name) for name in dirs + files)
  return paths


def _remove_new(path: str, before: set[str], keep: Callable[[str], bool] = lambda _: False) -> None:
  """Removes `path` and what lies under it, except what is in `before` or `keep` accepts."""
  is_dir = os.path.isdir(path) and not os.path.islink(path)
  if is_dir:
    for name in os.listdir(path):
      _remove_new(os.path.join(path, name), before, keep)
  if path in before or keep(path) or not os.path.lexists(path):
    return
  with contextlib.suppress(OSError):  # a folder that still holds kept files stays
    if is_dir:
      os.rmdir(path)
    else:
      os.remove(path)


@contextlib.contextmanager
def removing_what_a_failed_download_adds(builder: tfds.core.DatasetBuilder) -> Iterator[None]:
  """Removes what the enclosed download of `builder` created if it fails; nothing older.

  That is its dataset and version folders, its unfinished downloads and its extractions, and the
  data dir itself if the download created it. Finished downloads, which tfds has checked against
  their checksums, stay: the next attempt uses them instead of downloading them again.
  """
  paths = _paths_a_download_adds_to(builder)
  if '://' in paths['root']:  # a bucket (gs://...), not a local folder
    yield
    return
  new_folders = []  # the data dir and those of its parents that do not exist yet
  folder = paths['root']
  while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
    new_folders.append(folder)
    folder = os.path.dirname(folder)
  before = _tree(paths['dataset']) | _tree(paths['own_downloads'])
  before |= {p for p in (paths['downloads'], paths['extracted']) if os.path.lexists(p)}
  if os.path.isdir(paths['extracted']):
    before |= {os.path.join(paths['extracted'], n) for n in os.listdir(paths['extracted'])}
  try:
    yield
  except BaseException:
    own_downloads = paths['own_downloads']
    downloaded = os.listdir(own_downloads) if os.path.isdir(own_downloads) else []
    _remove_new(paths['dataset'], before)
    _remove_new(
        own_downloads,
        before,
        keep=lambda p: os.path.isfile(p) and '.tmp.' not in os.path.relpath(p, own_downloads),
    )
    if os.path.isdir(paths['extracted']):
      for name in os.listdir(paths['extracted']):
        path = os.path.join(paths['extracted'], name)
        if path not in before and any(f'.{d}' in name for d in downloaded):
          _remove_new(path, before)
    for folder in (paths['extracted'], paths['downloads'], *new_folders):
      if folder not in before and os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
    raise
