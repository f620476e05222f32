// Preloaded (NODE_OPTIONS=--require) into a CLI process to be a user without
// a home directory: HOME unset and no passwd entry, where the system call
// behind os.homedir() fails and node throws this kind of SystemError.
const os = require("node:os");
delete process.env.HOME;
os.homedir = () => {
  throw Object.assign(new Error("A system error occurred: uv_os_homedir returned ENOENT (no such file or directory)"), { code: "ERR_SYSTEM_ERROR" });
};
