# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""Naming the layers of a disk's backing chain as the agent's diskInfo gives it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import unittest

from ansible_collections.blockcopy.agent.plugins.module_utils.chain import find_layer, names_layer

# As diskInfo answers it: active layer first, each with libvirt's image index.
CHAIN = [
    {"path": "/i/top.qcow2", "format": "qcow2", "index": 3},
    {"path": "/i/mid.qcow2", "format": "qcow2", "index": 2},
    {"path": "/i/base.raw", "format": "raw", "index": 1},
]


class ChainTest(unittest.TestCase):
    def test_names(self):
        self.assertEqual(find_layer(CHAIN, "vda[2]", "vda"), 1)
        self.assertEqual(find_layer(CHAIN, "/i/./base.raw", "vda"), 2)
        self.assertIsNone(find_layer(CHAIN, "vdb[2]", "vda"))
        self.assertIsNone(find_layer(CHAIN, "/i/other.qcow2", "vda"))
        self.assertFalse(names_layer("vda[1]", None, "vda"))


if __name__ == "__main__":
    unittest.main()
