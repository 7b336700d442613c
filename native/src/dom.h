// A domain handle owned for the duration of one call, looked up like virsh does.
#pragma once

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <cctype>
#include <string>

#include "values.h"

namespace bca {

// Owns one virDomainPtr for the duration of a call.
class Dom {
 public:
  Dom(virConnectPtr c, const std::string& key) : p_(Lookup(c, key)) {}
  ~Dom() { virDomainFree(p_); }
  Dom(const Dom&) = delete;
  Dom& operator=(const Dom&) = delete;
  operator virDomainPtr() const { return p_; }

 private:
  static bool LooksLikeUuid(const std::string& s) {
    if (s.size() != 36 && s.size() != 32) return false;
    for (char ch : s) {
      if (!(isxdigit(static_cast<unsigned char>(ch)) || ch == '-')) return false;
    }
    return true;
  }
  static virDomainPtr Lookup(virConnectPtr c, const std::string& key) {
    // Like virsh: a UUID-shaped key is tried as a UUID first, then as a name.
    if (LooksLikeUuid(key)) {
      virDomainPtr d = virDomainLookupByUUIDString(c, key.c_str());
      if (d != nullptr) return d;
      virResetLastError();
    }
    virDomainPtr d = virDomainLookupByName(c, key.c_str());
    if (d == nullptr) ThrowLastError("domain not found");
    return d;
  }
  virDomainPtr p_;
};

}  // namespace bca
