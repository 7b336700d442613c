# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # How the modules reach the agent; shared by every module of the collection.
    DOCUMENTATION = r'''
requirements:
  - "Optional, for I(endpoint): websocket-client (Debian's C(python3-websocket), PyPI's C(websocket-client)) on the host
    the module runs on. Where it can be imported it speaks WebSocket; elsewhere the module's own RFC 6455 client
    (standard library only) does, checking the server's handshake (C(101), C(Upgrade), C(Connection),
    C(Sec-WebSocket-Accept), no extension or subprotocol that was not asked for). The default stdio transport
    (I(agent_command)) needs neither."
options:
  agent_command:
    description:
      - Command that runs C(blockcopy-agent stdio) on the managed host, as a list of words.
      - The modules speak JSON-RPC over its stdin and stdout. If a C(blockcopy-agent serve)
        daemon owns the jobs on that host, the stdio command relays to it.
      - Ignored when I(endpoint) is set.
    type: list
    elements: str
    default: [blockcopy-agent, stdio]
  endpoint:
    description:
      - A C(ws://) or C(wss://) URL of a running agent, instead of I(agent_command).
      - "Meant for use from the controller (C(delegate_to: localhost))."
      - If not set, the C(BLOCKCOPY_ENDPOINT) environment variable is used.
    type: str
  token:
    description:
      - Bearer token for I(endpoint).
      - If not set, the C(BLOCKCOPY_TOKEN) environment variable is used (as by the C(blockcopy-agent) CLI).
      - Sent only over C(wss://), or over C(ws://) to a host whose addresses are all loopback;
        anything else fails before connecting unless I(allow_insecure_token=true).
    type: str
  allow_insecure_token:
    description:
      - Send I(token) over a plain C(ws://) I(endpoint) whose host is not loopback, where anyone
        on the network path can read it and then drive the agent.
      - Only for a network you trust entirely (for example a tunnel ending on the agent's host);
        prefer a C(wss://) endpoint with I(ca_path).
    type: bool
    default: false
  ca_path:
    description:
      - CA certificate file to verify a C(wss://) I(endpoint) with.
      - If not set, the C(BLOCKCOPY_CA) environment variable is used (as by the C(blockcopy-agent) CLI).
    type: path
  client_cert:
    description:
      - Client certificate (PEM) to present to a C(wss://) I(endpoint) that asks for one (mutual TLS);
        the agent maps its subject to a principal (C(auth.readOnlyPrincipals)).
      - Requires I(client_key). If not set, the C(BLOCKCOPY_CERT) environment variable is used.
    type: path
  client_key:
    description:
      - Private key (PEM, unencrypted) of I(client_cert).
      - If not set, the C(BLOCKCOPY_KEY) environment variable is used.
    type: path
  validate_certs:
    description:
      - Verify the TLS certificate of a C(wss://) I(endpoint).
    type: bool
    default: true
  connection_timeout:
    description:
      - Seconds an I(endpoint) may stay silent before the connection counts as lost and the task
        fails with C(error=transport). The module pings the agent after a third of it, so a
        healthy agent answers well within it even while a long I(wait) goes on.
      - Covers a host cut off from the network or powered off, which closes nothing; what the
        agent was doing goes on there (a rerun of the task finds it).
    type: int
    default: 30
'''

    # The bandwidth option of the modules that start copies (block_copy, block_commit, block_pull, block_move).
    BANDWIDTH = r'''
options:
  bandwidth:
    description:
      - Bandwidth limit of each copy, as the agent's API takes it; C(0) or unset means unlimited.
      - An integer is bytes per second, as always; so is a string of digits only, because Ansible's
        templating turns numbers into strings (C("{{ 200 * 1024 * 1024 }}") arrives as one). The
        agent's API itself refuses a string without a unit.
      - A string with a unit names it, as virsh's scaled integers do - C(100M) or C(100MiB) is
        100 MiB/s (what C(virsh blockcopy --bandwidth 100) means), C(1G) 1 GiB/s, C(512K);
        C(KB), C(MB), C(GB) are powers of 1000; letter case does not matter.
    type: raw
'''

    # The attributes of the modules that only read (block_copy_info, checkpoint_info).
    INFO_MODULE = r'''
attributes:
  check_mode:
    support: full
    description: Reads only; behaves the same in check mode.
  diff_mode:
    support: none
    description: Reads only, so there is never a difference to show.
'''
