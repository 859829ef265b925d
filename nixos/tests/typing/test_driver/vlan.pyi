# Opaque stand-in for test_driver.vlan.VLan (the lab test does not use it).
class VLan:
    nr: int
