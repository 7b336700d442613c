# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""Reading a disk's backing chain from libvirt's live XML, and naming its layers."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import unittest

from ansible_collections.blockcopy.agent.plugins.module_utils.chain import find_layer, names_layer, parse_chain

# Shaped as libvirt 9 writes it: the active layer's index on <source>, the others on <backingStore>.
XML = """<domain type='kvm'><name>vm1</name><devices>
  <disk type='file' device='disk'>
    <driver name='qemu' type='qcow2'/>
    <source file='/i/top.qcow2' index='3'/>
    <backingStore type='file' index='2'>
      <format type='qcow2'/>
      <source file='/i/mid.qcow2'/>
      <backingStore type='file' index='1'>
        <format type='raw'/>
        <source file='/i/base.raw'/>
        <backingStore/>
      </backingStore>
    </backingStore>
    <target dev='vda' bus='virtio'/>
  </disk>
  <disk type='block' device='disk'>
    <driver name='qemu' type='raw'/>
    <source dev='/dev/vg/lv'/>
    <backingStore/>
    <target dev='vdb' bus='virtio'/>
  </disk>
</devices></domain>"""


class ChainTest(unittest.TestCase):
    def test_layers_active_first(self):
        self.assertEqual(parse_chain(XML, "vda"), [
            {"path": "/i/top.qcow2", "format": "qcow2", "index": 3},
            {"path": "/i/mid.qcow2", "format": "qcow2", "index": 2},
            {"path": "/i/base.raw", "format": "raw", "index": 1},
        ])

    def test_block_disk_and_missing_disk(self):
        self.assertEqual(parse_chain(XML, "vdb"), [{"path": "/dev/vg/lv", "format": "raw", "index": None}])
        self.assertIsNone(parse_chain(XML, "vdz"))

    def test_names(self):
        chain = parse_chain(XML, "vda")
        self.assertEqual(find_layer(chain, "vda[2]", "vda"), 1)
        self.assertEqual(find_layer(chain, "/i/./base.raw", "vda"), 2)
        self.assertIsNone(find_layer(chain, "vdb[2]", "vda"))
        self.assertIsNone(find_layer(chain, "/i/other.qcow2", "vda"))
        self.assertFalse(names_layer("vda[1]", None, "vda"))


if __name__ == "__main__":
    unittest.main()
