// pgqrs dashboard: progressive enhancement only (every page reads without it).
// A textarea marked data-json is checked as you type: the form cannot be sent while the text
// is not JSON, and the reason is shown. The server checks again (400 on bad JSON).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("textarea[data-json]").forEach(function (area) {
    var form = area.form;
    var state = form ? form.querySelector(".json-state") : null;
    var submit = form ? form.querySelector("button[type=submit]") : null;
    function check() {
      var text = area.value.trim();
      var problem = "";
      if (text !== "") {
        try { JSON.parse(text); } catch (error) { problem = error.message; }
      }
      area.setAttribute("aria-invalid", problem ? "true" : "false");
      area.setCustomValidity(problem ? "not JSON: " + problem : "");
      if (state) {
        state.textContent = problem ? "not JSON: " + problem : "valid JSON";
        state.classList.toggle("valid", !problem);
      }
      if (submit) { submit.disabled = Boolean(problem); }
    }
    area.addEventListener("input", check);
    check();
  });
});
