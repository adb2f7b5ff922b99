"""podnet's node-side code, shipped by the podnet_restore role beside podnet-restore.

A copy of the collection's standard-library-only module_utils the boot needs
(common/process.py, pods/): the boot-time restore imports it where Ansible is absent.
"""
