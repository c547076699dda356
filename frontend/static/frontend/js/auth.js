// Log in and sign up with the session API, then go to the user's own page.
import { api } from "./api.js";
import { showErrors } from "./dom.js";

const HOME = { worker: "/work/", manager: "/manage/", client: "/client/" };

function values(form) {
  return Object.fromEntries(new FormData(form).entries());
}

async function logIn(username, password, next) {
  const me = await api("/auth/login/", { method: "POST", body: { username, password } });
  window.location.assign(next || HOME[me.role] || "/");
}

const login = document.getElementById("login-form");
if (login) {
  login.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = login.querySelector("button[type=submit]");
    button.disabled = true;
    const { username, password } = values(login);
    try {
      await logIn(username, password, login.dataset.next);
    } catch (err) {
      showErrors(login, err);
      button.disabled = false;
    }
  });
}

const signup = document.getElementById("signup-form");
if (signup) {
  signup.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = signup.querySelector("button[type=submit]");
    button.disabled = true;
    const data = values(signup);
    try {
      await api("/auth/register/", { method: "POST", body: data });
      await logIn(data.username, data.password, "/work/");
    } catch (err) {
      showErrors(signup, err);
      button.disabled = false;
    }
  });
}
