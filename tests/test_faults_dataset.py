"""Dataset downloads that cannot work: found in seconds, and nothing of a failed one left behind.

No test here uses the network: the download servers are local ports, closed or listening.
"""

import os
import socket
import threading
import time

import pytest
import tensorflow_datasets as tfds

import input_pipeline
from input_pipeline import datasets, downloads


def _closed_port() -> int:
  """A local port nothing listens on: connecting to it is refused at once."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _files(path) -> set[str]:
  """Every file and folder under `path`, relative to it."""
  found = set()
  for parent, dirs, files in os.walk(path):
    found.update(os.path.relpath(os.path.join(parent, n), path) for n in dirs + files)
  return found


def _must_not_download(*args, **kwargs):
  raise AssertionError('download_and_prepare must not run when its server cannot be reached')


def test_probe_tells_a_closed_port_from_a_listening_one():
  closed = _closed_port()
  with socket.socket() as listening:
    listening.bind(('127.0.0.1', 0))
    listening.listen()
    port = listening.getsockname()[1]
    assert downloads.unreachable_server([('127.0.0.1', port)]) == ''
    why = downloads.unreachable_server([('127.0.0.1', port), ('127.0.0.1', closed)])
  assert why.startswith(f'127.0.0.1:{closed}: ') and 'refused' in why


def test_probe_gives_up_on_a_lookup_that_hangs(monkeypatch):
  release = threading.Event()

  def hanging_lookup(*args, **kwargs):  # a DNS server that never answers
    release.wait(30)
    raise OSError('released')

  monkeypatch.setattr(downloads.socket, 'create_connection', hanging_lookup)
  monkeypatch.setattr(downloads, '_PROBE_TIMEOUT_S', 0.3)
  start = time.monotonic()
  try:
    why = downloads.unreachable_server([('a.example', 443), ('b.example', 80)])
  finally:
    release.set()
  assert why == 'a.example:443: no answer within 0.3 s'
  assert time.monotonic() - start < 2


def test_download_servers_come_from_the_checksums_or_the_proxy(monkeypatch):
  for name in ('https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY', 'no_proxy', 'NO_PROXY'):
    monkeypatch.delenv(name, raising=False)
  mnist = tfds.builder('mnist')
  assert downloads.download_servers(mnist) == [('storage.googleapis.com', 443)]
  monkeypatch.setenv('https_proxy', 'http://proxy.internal:3128')
  assert downloads.download_servers(mnist) == [('proxy.internal', 3128)]
  monkeypatch.setenv('no_proxy', 'storage.googleapis.com')
  assert downloads.download_servers(mnist) == [('storage.googleapis.com', 443)]
  # Files put in place by hand, or generated here: nothing to connect to.
  assert downloads.download_servers(tfds.builder('imagenet2012')) == []
  assert downloads.download_servers(tfds.builder('offline_digits')) == []


def test_unreachable_server_fails_in_seconds_and_leaves_nothing(tmp_path, monkeypatch):
  port = _closed_port()
  monkeypatch.setattr(downloads, 'download_servers', lambda builder: [('127.0.0.1', port)])
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', _must_not_download)
  (tmp_path / 'downloads' / 'manual').mkdir(parents=True)
  (tmp_path / 'cifar10' / '3.0.2').mkdir(parents=True)  # another dataset, already prepared
  before = _files(tmp_path)
  start = time.monotonic()
  with pytest.raises(input_pipeline.DatasetError) as error:
    datasets.load_builder(input_pipeline.get_spec('mnist'), str(tmp_path), download=True)
  assert time.monotonic() - start < 3
  message = str(error.value)
  assert message.startswith(
      "Could not download dataset 'mnist': this machine cannot connect to its download server "
      f'(ConnectionError: 127.0.0.1:{port}: Connection refused). On a machine with internet'
  )
  assert f'copy ~/tensorflow_datasets/mnist into {tmp_path} on this machine' in message
  assert message.endswith('works with --config.dataset.name=offline_digits.')
  assert _files(tmp_path) == before


def test_probe_is_skipped_under_mock_data(tmp_path, monkeypatch):
  def no_probe(servers):
    raise AssertionError('mock data needs no download server')

  monkeypatch.setattr(downloads, 'unreachable_server', no_probe)
  with tfds.testing.mock_data(num_examples=4):
    builder = datasets.load_builder(input_pipeline.get_spec('mnist'), str(tmp_path), True)
  assert builder.name == 'mnist'


def _fail_halfway(builder, *args, **kwargs):
  """What tfds leaves when a download breaks off: folders, partial files, a finished file."""
  root = os.fspath(builder.data_dir_root)
  os.makedirs(
      os.path.join(os.fspath(builder.data_dir) + '.incomplete_1a2b', 'mnist-train.tfrecord')
  )
  downloads = os.path.join(root, 'downloads', builder.name)
  os.makedirs(os.path.join(downloads, 'train.gz.tmp.1a2b'))
  open(os.path.join(downloads, 'train.gz.tmp.1a2b', 'train.gz'), 'w').close()
  for finished in ('test.gz', 'test.gz.INFO'):
    open(os.path.join(downloads, finished), 'w').close()
  extracted = os.path.join(root, 'downloads', 'extracted')
  os.makedirs(os.path.join(extracted, 'incomplete.1a2b_GZIP.test.gz', 'x'))
  os.makedirs(os.path.join(extracted, 'GZIP.other.gz'))  # another dataset's, extracted meanwhile
  raise ConnectionError('Connection reset by peer')


def test_failed_download_removes_what_it_created_and_only_that(tmp_path, monkeypatch):
  monkeypatch.setattr(downloads, 'download_servers', lambda builder: [])
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', _fail_halfway)
  (tmp_path / 'mnist' / '1.0.0').mkdir(parents=True)  # an older version, prepared before
  (tmp_path / 'mnist' / '1.0.0' / 'dataset_info.json').write_text('{}')
  (tmp_path / 'downloads' / 'mnist').mkdir(parents=True)
  (tmp_path / 'downloads' / 'mnist' / 'old.gz').write_text('')
  (tmp_path / 'downloads' / 'extracted' / 'GZIP.old.gz').mkdir(parents=True)
  before = _files(tmp_path)
  with pytest.raises(
      input_pipeline.DatasetError,
      match=r'Could not download or prepare dataset '
      r"'mnist' \(ConnectionError: Connection reset by peer\)",
  ):
    datasets.load_builder(input_pipeline.get_spec('mnist'), str(tmp_path), download=True)
  # Downloads that finished (tfds checked their checksums) stay for the next attempt.
  finished = {os.path.join('downloads', 'mnist', f) for f in ('test.gz', 'test.gz.INFO')}
  other = os.path.join('downloads', 'extracted', 'GZIP.other.gz')
  assert _files(tmp_path) == before | finished | {other}


def test_failed_download_into_a_new_data_dir_leaves_no_folder(tmp_path, monkeypatch):
  def fail(builder, *args, **kwargs):
    os.makedirs(os.path.join(os.fspath(builder.data_dir) + '.incomplete_1a2b'))
    os.makedirs(os.path.join(os.fspath(builder.data_dir_root), 'downloads', 'extracted'))
    raise OSError('No space left on device')

  monkeypatch.setattr(downloads, 'download_servers', lambda builder: [])
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', fail)
  data_dir = tmp_path / 'new' / 'tfds'
  with pytest.raises(input_pipeline.DatasetError, match='No space left on device'):
    datasets.load_builder(input_pipeline.get_spec('emnist/letters'), str(data_dir), True)
  assert os.listdir(tmp_path) == []
