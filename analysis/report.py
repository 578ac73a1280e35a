"""A summary as text: an aligned table, GitHub markdown, or JSON."""

import json
from typing import Any

from analysis.summary import Summary
from common.errors import ConfigError

# MACs are multiply-accumulates; mem_access is ShuffleNet v2's "MAC", memory access in elements.
COLUMNS = (
    'layer',
    'kind',
    'output',
    'neurons',
    'params',
    'MACs',
    'mem_access',
    'act_bytes',
    'live_bytes',
    'RF',
    'jump',
    'start',
)
FORMATS = ('table', 'markdown', 'json')


def _pair(values: tuple | None) -> str:
  if values is None:
    return '—'
  return f'{values[0]:g}' if len(set(values)) == 1 else '×'.join(f'{v:g}' for v in values)


def _cells(layer) -> list[str]:
  return [
      layer.name,
      layer.kind,
      '×'.join(map(str, layer.output_shape)),
      f'{layer.neurons:,}',
      f'{layer.params:,}',
      f'{layer.macs:,}',
      f'{layer.memory_access:,}',
      f'{layer.activation_bytes:,}',
      f'{layer.live_bytes:,}',
      _pair(layer.receptive_field),
      _pair(layer.jump),
      _pair(layer.start),
  ]


def _si(n: float) -> str:
  for scale, unit in ((1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
    if abs(n) >= scale:
      return f'{n / scale:.4g} {unit}'
  return f'{n:g}'


def _totals(summary: Summary) -> list[str]:
  lines = [
      f'{summary.model} on {"×".join(map(str, summary.input_shape))} inputs: '
      f'{summary.total_params:,} parameters ({_si(summary.total_params)}), '
      f'{summary.total_macs:,} MACs ({_si(summary.total_macs)} multiply-accumulates = '
      f'{_si(2 * summary.total_macs)} FLOPs).'
  ]
  lines.append(
      f'Memory access (ShuffleNet v2\'s "MAC", not MACs): {summary.total_memory_access:,} '
      f'elements ({_si(summary.total_memory_access)}) of conv/matmul inputs, weights and '
      'outputs, each read or written once per image.'
  )
  lines.append(
      f'Activations per image: {summary.activation_bytes:,} bytes '
      f'({_si(summary.activation_bytes)}B) in the outputs of every layer (a floor for what '
      f'training keeps for the backward pass); at most {summary.peak_live_bytes:,} bytes '
      f'({_si(summary.peak_live_bytes)}B) live at once in the eval pass, at '
      f'{summary.peak_live_at or "the input"} (each array freed after its last use; a residual '
      "block's input stays live until its add)."
  )
  if summary.unused_params:
    lines.append(
        f'{summary.unused_params:,} of the parameters sit in modules the eval forward '
        'pass does not call (auxiliary heads).'
    )
  if summary.xla:
    xla = summary.xla
    padding = summary.total_macs - xla['real_macs']
    lines.append(
        f'XLA cost analysis: the conv/matmul ops cost {xla["layer_flops"]:,.0f} flops = 2 × '
        f'{xla["real_macs"]:,.0f} MACs on real pixels (the {padding:,.0f} MACs on padding taps '
        f"are in the count above but not in XLA's); the whole forward pass "
        f'{xla["forward_flops"]:,.0f} flops with bias, BatchNorm, activations and pooling.'
    )
  return lines


def table(summary: Summary) -> str:
  rows = [list(COLUMNS)] + [_cells(l) for l in summary.layers]
  widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
  right = set(range(3, len(COLUMNS)))
  lines = [
      '  '.join(
          c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
      ).rstrip()
      for r in rows
  ]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines + [''] + _totals(summary))


def markdown(summary: Summary) -> str:
  lines = [
      '| ' + ' | '.join(COLUMNS) + ' |',
      '|' + '|'.join('---:' if i >= 3 else '---' for i in range(len(COLUMNS))) + '|',
  ]
  lines += [
      '| ' + ' | '.join(c.replace('|', '\\|') for c in _cells(l)) + ' |' for l in summary.layers
  ]
  return '\n'.join(lines + [''] + _totals(summary))


def as_dict(summary: Summary) -> dict[str, Any]:
  return {
      'model': summary.model,
      'input_shape': list(summary.input_shape),
      'total_params': summary.total_params,
      'total_macs': summary.total_macs,
      'unused_params': summary.unused_params,
      'total_memory_access': summary.total_memory_access,
      'activation_bytes': summary.activation_bytes,
      'peak_live_bytes': summary.peak_live_bytes,
      'peak_live_at': summary.peak_live_at,
      'xla': summary.xla,
      'layers': [
          {
              'name': l.name,
              'kind': l.kind,
              'output_shape': list(l.output_shape),
              'neurons': l.neurons,
              'params': l.params,
              'macs': l.macs,
              'memory_access': l.memory_access,
              'activation_bytes': l.activation_bytes,
              'live_bytes': l.live_bytes,
              'receptive_field': _list(l.receptive_field),
              'jump': _list(l.jump),
              'start': _list(l.start),
          }
          for l in summary.layers
      ],
  }


def _list(values: tuple | None) -> list | None:
  return None if values is None else list(values)


def to_json(summary: Summary) -> str:
  """JSON with one line per layer (valid JSON, and readable for a 300-layer DenseNet)."""
  record = as_dict(summary)
  layers = record.pop('layers')
  head = json.dumps(record, ensure_ascii=False)[:-1]
  rows = ',\n  '.join(json.dumps(l, ensure_ascii=False) for l in layers)
  return f'{head}, "layers": [\n  {rows}\n]}}'


def render(summary: Summary, fmt: str) -> str:
  if fmt == 'json':
    return to_json(summary)
  if fmt == 'markdown':
    return markdown(summary)
  if fmt == 'table':
    return table(summary)
  raise ConfigError(f'Unknown format {fmt!r}; choose one of {", ".join(FORMATS)}.')
