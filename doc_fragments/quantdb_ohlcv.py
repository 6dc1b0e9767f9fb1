# -*- coding: utf-8 -*-
"""Options about ohlcv_data shared by several quantdb-ops modules, documented once. Their
values live in module_utils/quantdb_ohlcv.py (REGION_EXCHANGES); tests/unit compares the two."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # A module using it may add its own description (its words override these).
    REGION_EXCHANGES = r"""
options:
  region_exchanges:
    description:
      - Exchange (MIC, as exchange_calendars names it) of each region, as a mapping of region
        code to exchange code. The default is the project's one map of regions to exchanges
        (module_utils/quantdb_ohlcv.py).
    type: dict
    default:
      KR: XKRX
      US: XNYS
"""
