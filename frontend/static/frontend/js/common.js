// Every page: the log-out button.
import { api } from "./api.js";

const logout = document.getElementById("logout");
if (logout) {
  logout.addEventListener("click", async () => {
    await api("/auth/logout/", { method: "POST" }).catch(() => {});
    window.location.assign("/");
  });
}
